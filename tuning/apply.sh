#!/usr/bin/env bash
# Apply a coreplex kernel-tuning profile, raising limits only, and remember what changed.
#
#   tuning/apply.sh [--dry-run] [--install] PROFILE     PROFILE: c1m | c10m
#   tuning/apply.sh [--dry-run] --revert
#
# For each knob of tuning/sysctl.d/coreplex-PROFILE.conf the new value is the more generous of the
# current value and the profile's: limits and sizes are only raised (element-wise for triples such
# as tcp_mem), ip_local_port_range only widened, tcp_fin_timeout only shortened, and tcp_tw_reuse
# set to 1 (on for all connections; 2 means loopback only). A knob the kernel does not have (e.g.
# nf_conntrack not loaded) is skipped. The value each changed knob had is saved in the state file
# (first run wins, so applying twice and reverting once restores the original); --revert restores
# exactly those values and removes what --install added. --install also writes
# /etc/sysctl.d/60-coreplex.conf (the applied values, so they survive a reboot) and copies
# tuning/limits.d/coreplex.conf to /etc/security/limits.d/60-coreplex.conf.
#
# Environment: COREPLEX_TUNING_STATE (default /var/lib/coreplex/tuning.state),
#              COREPLEX_SYSCTL_ROOT (default /proc/sys; tests point it elsewhere),
#              COREPLEX_ETC (default /etc).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${COREPLEX_TUNING_STATE:-/var/lib/coreplex/tuning.state}
sysroot=${COREPLEX_SYSCTL_ROOT:-/proc/sys}
etc=${COREPLEX_ETC:-/etc}
dry=0 revert=0 install=0 profile=""

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --revert) revert=1 ;;
        --install) install=1 ;;
        -h|--help) usage ;;
        -*) echo "apply.sh: unknown option $1" >&2; usage ;;
        *) [ -z "$profile" ] || { echo "apply.sh: one profile only" >&2; exit 2; }; profile=$1 ;;
    esac
    shift
done

key_path() { echo "$sysroot/${1//.//}"; }
read_key() { tr -s ' \t' ' ' < "$(key_path "$1")" | sed 's/^ //; s/ $//'; }
write_key() { printf '%s\n' "$2" > "$(key_path "$1")"; }

# The more generous of current ($2) and wanted ($3) for knob $1.
target_value() {
    local key=$1 cur=$2 want=$3
    case "$key" in
        net.ipv4.ip_local_port_range)
            read -r cl ch <<<"$cur"; read -r wl wh <<<"$want"
            echo "$(( cl < wl ? cl : wl )) $(( ch > wh ? ch : wh ))" ;;
        net.ipv4.tcp_fin_timeout)
            echo $(( cur < want ? cur : want )) ;;
        net.ipv4.tcp_tw_reuse)
            echo 1 ;;
        *)
            local -a c w; read -r -a c <<<"$cur"; read -r -a w <<<"$want"
            if [ "${#c[@]}" -ne "${#w[@]}" ]; then echo "$cur"; return; fi
            local out=() i
            for i in "${!c[@]}"; do out+=( $(( c[i] > w[i] ? c[i] : w[i] )) ); done
            echo "${out[*]}" ;;
    esac
}

need_root() {
    if [ "$dry" -eq 0 ] && [ "$(id -u)" -ne 0 ] && [ "$sysroot" = /proc/sys ]; then
        echo "apply.sh: must run as root (or use --dry-run)" >&2; exit 1
    fi
}

if [ "$revert" -eq 1 ]; then
    [ -z "$profile" ] || { echo "apply.sh: --revert takes no profile" >&2; exit 2; }
    if [ ! -f "$state" ]; then echo "nothing to revert ($state does not exist)"; exit 0; fi
    need_root
    while IFS=$'\t' read -r kind key value; do
        case "$kind" in
            sysctl)
                if [ "$dry" -eq 1 ]; then echo "would restore $key = $value"
                else write_key "$key" "$value" && echo "restored $key = $value"; fi ;;
            file)
                if [ "$dry" -eq 1 ]; then echo "would remove $key"
                else rm -f "$key" && echo "removed $key"; fi ;;
            backup)
                if [ "$dry" -eq 1 ]; then echo "would restore $key from $value"
                else mv -f "$value" "$key" && echo "restored $key"; fi ;;
        esac
    done < <(tac "$state")
    [ "$dry" -eq 1 ] || rm -f "$state"
    exit 0
fi

case "$profile" in
    c1m|c10m) ;;
    "") echo "apply.sh: a profile is required: c1m or c10m" >&2; exit 2 ;;
    *) echo "apply.sh: unknown profile '$profile': use c1m or c10m" >&2; exit 2 ;;
esac
conf="$here/sysctl.d/coreplex-$profile.conf"
need_root
[ "$dry" -eq 1 ] || mkdir -p "$(dirname "$state")"

saved() { [ -f "$state" ] && cut -f1,2 "$state" | grep -qxF "$1"$'\t'"$2"; }
record() { saved "$1" "$2" || printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$state"; }

applied=()
changed=0
while IFS= read -r line; do
    line=${line%%#*}
    [[ "$line" =~ ^[[:space:]]*([a-z0-9_.-]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]] || continue
    key=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
    want=$(echo "$want" | tr -s ' \t' ' ')
    if [ ! -e "$(key_path "$key")" ]; then echo "skip $key: not present in this kernel"; continue; fi
    cur=$(read_key "$key")
    new=$(target_value "$key" "$cur" "$want")
    applied+=("$key = $new")
    if [ "$new" = "$cur" ]; then echo "ok   $key = $cur"; continue; fi
    changed=$((changed + 1))
    if [ "$dry" -eq 1 ]; then echo "would set $key: $cur -> $new"; continue; fi
    record sysctl "$key" "$cur"
    if write_key "$key" "$new" 2>/dev/null; then echo "set  $key: $cur -> $new"
    else echo "FAILED to set $key (read-only here?)" >&2; fi
done < "$conf"

if [ "$install" -eq 1 ]; then
    install_file() { # dest, content-producing command...
        local dest=$1; shift
        if [ "$dry" -eq 1 ]; then echo "would write $dest"; return; fi
        mkdir -p "$(dirname "$dest")"
        if [ -e "$dest" ] && ! saved file "$dest" && ! saved backup "$dest"; then
            cp -p "$dest" "$dest.coreplex-orig" && record backup "$dest" "$dest.coreplex-orig"
        elif [ ! -e "$dest" ]; then
            record file "$dest" ""
        fi
        "$@" > "$dest" && echo "wrote $dest"
    }
    install_file "$etc/sysctl.d/60-coreplex.conf" \
        printf '# written by coreplex tuning/apply.sh (profile %s)\n%s\n' "$profile" "$(printf '%s\n' "${applied[@]}")"
    install_file "$etc/security/limits.d/60-coreplex.conf" cat "$here/limits.d/coreplex.conf"
fi

if [ "$dry" -eq 1 ]; then echo "dry run: $changed knob(s) would change; nothing was written"
else echo "$changed knob(s) changed; saved in $state (undo: tuning/apply.sh --revert)"; fi
