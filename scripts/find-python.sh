#!/bin/sh
# find-python.sh -- prints the path of a working interpreter for NAME (e.g. python3.12).
# pyenv shims answer only for the active versions, so fall back to pyenv's tree.
name=${1:-python3.11}
if p=$(command -v "$name" 2>/dev/null) && "$p" -c 'import sys' >/dev/null 2>&1; then
    "$p" -c 'import sys; print(sys.executable)'; exit 0
fi
ver=${name#python}
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for d in $(ls -d "$root"/versions/"$ver"* 2>/dev/null | sort -rV); do
    if [ -x "$d/bin/$name" ]; then echo "$d/bin/$name"; exit 0; fi
done
echo "find-python.sh: no interpreter named $name (install it, or pass PYTHON=/path/to/python)" >&2
exit 1
