#!/usr/bin/env bash
# Checks for everything the build and the tests need that Swift does not bring
# (Debian packages, Python packages) and installs what is missing:
# apt-get when run as root, sudo when it works without a password, otherwise
# it stops and prints the exact command to run. `make demo`, `make test` and
# .ci/run all start here, so the two README commands work on a fresh machine.
#
#   scripts/bootstrap.sh                   # check, install what is missing
#   scripts/bootstrap.sh --check           # check only: exit 1 and name what is missing
#   scripts/bootstrap.sh --check-declared  # scan the sources for needs not declared here
#
# What is declared: the Debian packages below plus the `.apt([...])` providers
# of Package.swift's system libraries, and the Python packages of
# scripts/requirements-test.txt (python/ adds its own when present).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-install}"

# Debian packages: the system libraries' providers come from Package.swift, so
# a new .systemLibrary target is declared in one place.
apt_packages=(pkg-config make python3 python3-pip)
while read -r package; do apt_packages+=("$package"); done < <(
    grep -o '\.apt(\[[^]]*\])' Package.swift | grep -o '"[^"]*"' | tr -d '"' | sort -u)

python_requirements=()
while read -r line; do
    line="${line%%#*}"; line="$(echo "$line" | xargs)"
    [ -n "$line" ] && python_requirements+=("$line")
done < scripts/requirements-test.txt

if [ "$mode" = "--check-declared" ]; then
    exec python3 scripts/check-declared.py "${apt_packages[@]}" -- "${python_requirements[@]}"
fi

missing_apt=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing_apt+=("$package")
done

# A requirement's import name: the distribution name without extras or version, '-' as '_'.
module_of() {
    local name="${1%%[<>=!~;[ ]*}"
    # Distributions whose import name is not their name.
    case "$name" in
        protobuf) echo google.protobuf; return ;;
        grpcio-tools) echo grpc_tools; return ;;
    esac
    name="${name//-/_}"; echo "$name" | tr '[:upper:]' '[:lower:]'
}
missing_python=()
python_ok() { command -v python3 >/dev/null 2>&1 && python3 -c "import $1" >/dev/null 2>&1; }
for requirement in "${python_requirements[@]}"; do
    python_ok "$(module_of "$requirement")" || missing_python+=("$requirement")
done

if [ ${#missing_apt[@]} -eq 0 ] && [ ${#missing_python[@]} -eq 0 ]; then
    [ "$mode" = "--check" ] && echo "bootstrap: everything is installed (${#apt_packages[@]} Debian packages, ${#python_requirements[@]} Python packages)"
    exit 0
fi

apt_command="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing_apt[*]:-}"
pip_command="python3 -m pip install --quiet --disable-pip-version-check ${missing_python[*]:-}"
if [ "$mode" = "--check" ]; then
    [ ${#missing_apt[@]} -gt 0 ] && echo "bootstrap: missing Debian packages: ${missing_apt[*]}"
    [ ${#missing_python[@]} -gt 0 ] && echo "bootstrap: missing Python packages: ${missing_python[*]}"
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo_prefix=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo_prefix="sudo "
else
    echo "bootstrap: missing, and not root (no password-less sudo either). Run:" >&2
    [ ${#missing_apt[@]} -gt 0 ] && echo "  sudo sh -c '$apt_command'" >&2
    [ ${#missing_python[@]} -gt 0 ] && echo "  $pip_command --user" >&2
    exit 1
fi

if [ ${#missing_apt[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing_apt[*]}"
    ${sudo_prefix}apt-get update -qq
    ${sudo_prefix}env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_apt[@]}" >/dev/null
fi
if [ ${#missing_python[@]} -gt 0 ]; then
    echo "bootstrap: installing Python packages: ${missing_python[*]}"
    # Debian's python3 is "externally managed" (PEP 668): fall back to --break-system-packages
    # as root (a throwaway CI machine or the developer's choice), --user otherwise.
    pip=(python3 -m pip install --quiet --disable-pip-version-check)
    [ "$(id -u)" -eq 0 ] || pip+=(--user)
    "${pip[@]}" "${missing_python[@]}" 2>/dev/null || "${pip[@]}" --break-system-packages "${missing_python[@]}"
fi
exec "$0" --check
