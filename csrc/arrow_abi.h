/*
 * arrow_abi.h: the Arrow C data interface's structs, as the specification
 * defines them (the C stream interface too), and the PyCapsule names of the
 * Arrow PyCapsule interface.  Written out here, as dlpack.h is, so that leaky
 * builds without Arrow's headers and never imports pyarrow.
 */
#ifndef LEAKY_ARROW_ABI_H
#define LEAKY_ARROW_ABI_H

#include <stdint.h>

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);  /* NULL once released */
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;  /* -1: not computed */
    int64_t offset;      /* in elements (in bits for a bitmap) */
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;  /* a primitive array: validity (may be NULL), values */
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);  /* release NULL: end */
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};

#define ARROW_SCHEMA_CAPSULE "arrow_schema"
#define ARROW_ARRAY_CAPSULE "arrow_array"
#define ARROW_STREAM_CAPSULE "arrow_array_stream"

#endif /* LEAKY_ARROW_ABI_H */
