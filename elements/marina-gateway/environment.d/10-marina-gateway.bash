# shellcheck shell=bash
# A directory on the build host holding Marina's wheel and the wheels it
# depends on (`make image` builds them): the image installs from it alone,
# since the build may not reach a package index.
export DIB_MARINA_WHEELS=${DIB_MARINA_WHEELS:-}
