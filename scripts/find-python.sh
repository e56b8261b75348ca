#!/bin/sh
# find-python.sh -- prints the path of a working interpreter for NAME (e.g. python3.12).
# pyenv shims answer only for the active versions, so fall back to pyenv's tree.
name=${1:-python3.11}
if p=$(command -v "$name" 2>/dev/null) && "$p" -c 'import sys' >/dev/null 2>&1; then
    "$p" -c 'import sys; print(sys.executable)'; exit 0
fi
ver=${name#python}
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
# Free-threaded versions (3.14t ...) are passed over: apiprof does not build for them.
for d in $(ls -d "$root"/versions/"$ver"* 2>/dev/null | grep -v 't[^/]*$' | sort -rV); do
    if [ -x "$d/bin/$name" ]; then echo "$d/bin/$name"; exit 0; fi
done
case $ver in
    3.14|3.15) hint="; make gets $name from a Debian unstable root unless SID=0" ;;
    *) hint="" ;;
esac
echo "find-python.sh: no interpreter named $name (install it, or pass PYTHON=/path/to/python$hint)" >&2
exit 1
