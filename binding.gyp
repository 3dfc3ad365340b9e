# The node-gyp fallback build (the main one is CMakeLists.txt via cmake-js).
# Both take libtorch's paths and flags from install/find-libtorch.js.
{
  "targets": [
    {
      "target_name": "generic_perceptual_loss",
      # The one source list, native/sources.txt, which CMakeLists.txt reads too; the CUDA-only
      # sources come from find-libtorch.js.
      "sources": ["<!@(cat native/sources.txt)", "<!@(node install/find-libtorch.js --gyp sources)"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node install/find-libtorch.js --gyp include_dirs)"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "<!@(node install/find-libtorch.js --gyp defines)"
      ],
      # libtorch's headers need RTTI and exceptions, which node-gyp turns off by default.
      "cflags!": ["-fno-exceptions"],
      # The C++ standard follows the libtorch (find-libtorch.js): node-gyp's own -std goes.
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["<!@(node install/find-libtorch.js --gyp cflags_cc)", "-fexceptions", "-frtti", "-O3", "-fvisibility=hidden"],
      "libraries": ["<!@(node install/find-libtorch.js --gyp libraries)"],
      "ldflags": ["<!@(node install/find-libtorch.js --gyp ldflags)", "-Wl,--no-as-needed"]
    }
  ]
}
