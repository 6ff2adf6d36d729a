/*
 * dlpack.h: the DLPack 1.0 ABI, the few structs and constants leaky reads
 * and writes.  Written out here rather than vendored: the upstream header
 * (github.com/dmlc/dlpack, include/dlpack/dlpack.h, Apache-2.0) is mostly
 * documentation, and only these layouts matter.  They follow DLPack 1.0
 * field for field; DLPack promises that a capsule's version, manager_ctx
 * and deleter stay where they are in every later version, so a consumer
 * can read the version first and still free a tensor it cannot read.
 *
 * Private to leaky's C files, like leaky.h.
 */
#ifndef LEAKY_DLPACK_H
#define LEAKY_DLPACK_H

#include <stdint.h>

#define DLPACK_MAJOR_VERSION 1
#define DLPACK_MINOR_VERSION 0

/* DLDeviceType: only the CPU is one leaky can compute on. */
enum { kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3 };

/* DLDataTypeCode (1.0 has codes 0-6; 1.1 added float8/float4 codes 7-17). */
enum {
    kDLInt = 0,
    kDLUInt = 1,
    kDLFloat = 2,
    kDLOpaqueHandle = 3,
    kDLBfloat = 4,
    kDLComplex = 5,
    kDLBool = 6,
};

typedef struct {
    int32_t device_type;
    int32_t device_id;
} DLDevice;

typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;

typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides;  /* in elements; NULL means C-contiguous */
    uint64_t byte_offset;
} DLTensor;

typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

typedef struct {
    uint32_t major;
    uint32_t minor;
} DLPackVersion;

#define DLPACK_FLAG_BITMASK_READ_ONLY (UINT64_C(1) << 0)
#define DLPACK_FLAG_BITMASK_IS_COPIED (UINT64_C(1) << 1)

typedef struct DLManagedTensorVersioned {
    DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensorVersioned *self);
    uint64_t flags;
    DLTensor dl_tensor;
} DLManagedTensorVersioned;

/* The capsule names of the Python specification (data-apis.org, __dlpack__). */
#define DLPACK_CAPSULE "dltensor"
#define DLPACK_CAPSULE_USED "used_dltensor"
#define DLPACK_VERSIONED_CAPSULE "dltensor_versioned"
#define DLPACK_VERSIONED_CAPSULE_USED "used_dltensor_versioned"

#endif /* LEAKY_DLPACK_H */
