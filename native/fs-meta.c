// The two file-system calls Node does not give with full precision or at all: utimensat with
// nanoseconds (libuv's utimes keeps microseconds) and mknod (FIFOs, character and block devices).
// Loaded by src/util/native-fs.ts; built from this source by node-gyp at `npm ci` (binding.gyp).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <node_api.h>

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    if ((call) != napi_ok) return NULL;                                                                                \
  } while (0)

static const char *errno_code(int err) {
  switch (err) {
  case EPERM: return "EPERM";
  case ENOENT: return "ENOENT";
  case EACCES: return "EACCES";
  case EEXIST: return "EEXIST";
  case ENOTDIR: return "ENOTDIR";
  case EINVAL: return "EINVAL";
  case EROFS: return "EROFS";
  case ENAMETOOLONG: return "ENAMETOOLONG";
  case ELOOP: return "ELOOP";
  case ENOSPC: return "ENOSPC";
  case EIO: return "EIO";
  case ENOSYS: return "ENOSYS";
  case EOPNOTSUPP: return "EOPNOTSUPP";
  case EDQUOT: return "EDQUOT";
  case EBADF: return "EBADF";
  case ENOMEM: return "ENOMEM";
  default: return "EUNKNOWN";
  }
}

/** Throws an Error like Node's own: `code`, `errno` (negative), `syscall`, and the message. */
static void throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  char message[512];
  snprintf(message, sizeof message, "%s: %s, %s '%s'", errno_code(err), strerror(err), syscall, path);
  napi_value code, msg, error, value;
  if (napi_create_string_utf8(env, errno_code(err), NAPI_AUTO_LENGTH, &code) != napi_ok) return;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok) return;
  if (napi_create_error(env, code, msg, &error) != napi_ok) return;
  if (napi_create_int32(env, -err, &value) == napi_ok) napi_set_named_property(env, error, "errno", value);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &value) == napi_ok)
    napi_set_named_property(env, error, "syscall", value);
  napi_throw(env, error);
}

/** A path argument (string or Buffer) as a NUL-terminated copy; NULL (with an exception) when it is neither or holds NUL. */
static char *path_arg(napi_env env, napi_value value) {
  bool is_buffer = false;
  napi_is_buffer(env, value, &is_buffer);
  char *path = NULL;
  size_t length = 0;
  if (is_buffer) {
    void *data;
    if (napi_get_buffer_info(env, value, &data, &length) != napi_ok) return NULL;
    path = malloc(length + 1);
    if (path == NULL) return NULL;
    memcpy(path, data, length);
  } else {
    if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "the path must be a string or a Buffer");
      return NULL;
    }
    path = malloc(length + 1);
    if (path == NULL) return NULL;
    napi_get_value_string_utf8(env, value, path, length + 1, &length);
  }
  path[length] = '\0';
  if (strlen(path) != length) {
    free(path);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "the path must not hold NUL bytes");
    return NULL;
  }
  return path;
}

/** Nanoseconds since the epoch (a bigint) as a timespec, rounding towards minus infinity. */
static bool timespec_arg(napi_env env, napi_value value, struct timespec *out) {
  int64_t ns;
  bool lossless;
  if (napi_get_value_bigint_int64(env, value, &ns, &lossless) != napi_ok || !lossless) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "a time must be a bigint of nanoseconds within 64 bits");
    return false;
  }
  int64_t sec = ns / 1000000000;
  int64_t rem = ns % 1000000000;
  if (rem < 0) {
    rem += 1000000000;
    sec -= 1;
  }
  out->tv_sec = (time_t)sec;
  out->tv_nsec = (long)rem;
  return true;
}

/** utimensat(path, atimeNs, mtimeNs, noFollow): sets both times to the nanosecond. */
static napi_value Utimensat(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "utimensat(path, atimeNs, mtimeNs, noFollow)");
    return NULL;
  }
  struct timespec times[2];
  if (!timespec_arg(env, argv[1], &times[0]) || !timespec_arg(env, argv[2], &times[1])) return NULL;
  bool no_follow = false;
  CHECK(napi_get_value_bool(env, argv[3], &no_follow));
  char *path = path_arg(env, argv[0]);
  if (path == NULL) return NULL;
  if (utimensat(AT_FDCWD, path, times, no_follow ? AT_SYMLINK_NOFOLLOW : 0) != 0)
    throw_errno(env, errno, "utimensat", path);
  free(path);
  return NULL;
}

/** mknod(path, mode, dev): mode with its S_IF* type; dev a bigint or number (st_rdev as stat gives it). */
static napi_value Mknod(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "mknod(path, mode, dev)");
    return NULL;
  }
  uint32_t mode;
  CHECK(napi_get_value_uint32(env, argv[1], &mode));
  uint64_t dev = 0;
  bool lossless = true;
  napi_valuetype type;
  CHECK(napi_typeof(env, argv[2], &type));
  if (type == napi_bigint) {
    CHECK(napi_get_value_bigint_uint64(env, argv[2], &dev, &lossless));
  } else {
    int64_t number;
    CHECK(napi_get_value_int64(env, argv[2], &number));
    lossless = number >= 0;
    dev = (uint64_t)number;
  }
  if (!lossless) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "a device number must be a non-negative 64-bit integer");
    return NULL;
  }
  char *path = path_arg(env, argv[0]);
  if (path == NULL) return NULL;
  if (mknod(path, (mode_t)mode, (dev_t)dev) != 0) throw_errno(env, errno, "mknod", path);
  free(path);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"utimensat", NULL, Utimensat, NULL, NULL, NULL, napi_default, NULL},
      {"mknod", NULL, Mknod, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, 2, properties));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
