#!/usr/bin/env bash
# Make sure the browser of the browser tests (tests/e2e/ui) is installed: Debian's chromium at
# ${ETL_TEST_CHROMIUM:-/usr/bin/chromium}. Installs it with apt-get when it is missing (as root,
# else through `sudo -n`); fails with the command to run when it cannot. Playwright's own browser
# download is not used: the tests drive this chromium.
set -euo pipefail

chromium=${ETL_TEST_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] && exit 0

how="install Debian's chromium (as root: apt-get update && apt-get install -y chromium), or set ETL_TEST_CHROMIUM to a Chromium binary"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$chromium is missing and there is no apt-get here: $how" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "$chromium is missing and installing it needs root (sudo -n is not available): $how" >&2
  exit 1
fi

echo "installing chromium for the browser tests (apt-get)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${as_root[@]}" apt-get update -q \
  && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "could not install chromium with apt-get (output above): $how" >&2
  exit 1
fi
[ -x "$chromium" ] || { echo "chromium was installed but $chromium is not there: set ETL_TEST_CHROMIUM" >&2; exit 1; }
