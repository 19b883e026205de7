{
  "targets": [
    {
      "target_name": "fs_meta",
      "sources": ["native/fs-meta.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
