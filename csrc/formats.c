/*
 * formats.c: which element kind a buffer's struct-module format string
 * names.  The kinds themselves and their result formats are in leaky.h.
 */
#include "leaky.h"

/*
 * Maps a struct-module format string to an element kind.  Integer widths are
 * taken from the itemsize the exporter reports, not from the letter: ctypes
 * says '<l' for its 8-byte c_long although '<l' is 4 bytes in struct's
 * standard sizes, and the itemsize is what is really in memory.
 */
FormatStatus
parse_format(const char *format, Py_ssize_t itemsize, ElemKind *kind)
{
    if (format == NULL) {  /* the buffer protocol's way of saying 'B' */
        format = "B";
    }
    const char *code = format;
    switch (*code) {
    case '@': case '=':
        code++;
        break;
#if PY_BIG_ENDIAN
    case '>': case '!':
        code++;
        break;
    case '<':
        return FORMAT_FOREIGN_BYTE_ORDER;
#else
    case '<':
        code++;
        break;
    case '>': case '!':
        if (code[1] != '\0' && code[2] == '\0' && strchr("efd?bhilqnBHILQN", code[1])) {
            return FORMAT_FOREIGN_BYTE_ORDER;
        }
        return FORMAT_UNSUPPORTED;
#endif
    default:
        break;
    }
    if (code[0] == '\0' || code[1] != '\0') {
        return FORMAT_UNSUPPORTED;  /* empty, repeat counts, structs, 'Zd', ... */
    }
    char letter = code[0];
    switch (letter) {
    case 'e':
        if (itemsize != 2) return FORMAT_UNSUPPORTED;
        *kind = KIND_F16;
        return FORMAT_OK;
    case 'f':
        if (itemsize != 4) return FORMAT_UNSUPPORTED;
        *kind = KIND_F32;
        return FORMAT_OK;
    case 'd':
        if (itemsize != 8) return FORMAT_UNSUPPORTED;
        *kind = KIND_F64;
        return FORMAT_OK;
    case '?':
        if (itemsize != 1) return FORMAT_UNSUPPORTED;
        *kind = KIND_BOOL;
        return FORMAT_OK;
    default:
        break;
    }
    int is_signed;
    if (strchr("bhilqn", letter) != NULL) {
        is_signed = 1;
    }
    else if (strchr("BHILQN", letter) != NULL) {
        is_signed = 0;
    }
    else {
        return FORMAT_UNSUPPORTED;
    }
    switch (itemsize) {
    case 1: *kind = is_signed ? KIND_I8 : KIND_U8; return FORMAT_OK;
    case 2: *kind = is_signed ? KIND_I16 : KIND_U16; return FORMAT_OK;
    case 4: *kind = is_signed ? KIND_I32 : KIND_U32; return FORMAT_OK;
    case 8: *kind = is_signed ? KIND_I64 : KIND_U64; return FORMAT_OK;
    default: return FORMAT_UNSUPPORTED;
    }
}
