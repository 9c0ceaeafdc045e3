#!/bin/sh
# Re-takes the captures in this folder: runs the simulator with frame tracing, drives it with the
# real qmicli, and writes each command's frames to <name>.txt ("> " host to modem, "< " back).
# Usage: capture.sh SIMULATOR_BINARY (e.g. target/debug/aiesim-modemsim)
set -eu
sim=$1
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
RUST_LOG=aiesim_modemsim::qmi=trace "$sim" --link "$work/wdm" >"$work/announce" 2>"$work/log" &
pid=$!
until grep -q '^PTY' "$work/announce" 2>/dev/null; do sleep 0.1; done

capture() {
    name=$1
    shift
    before=$(wc -l <"$work/log")
    timeout 20 qmicli -d "$work/wdm" --device-open-qmi "$@" >/dev/null 2>&1
    sleep 0.2
    {
        echo "# qmicli --device-open-qmi $* (libqmi $(qmicli --version | sed -n 's/^qmicli //p'))"
        tail -n +"$((before + 1))" "$work/log" |
            sed -n 's/.*direction="in" frame="\([0-9a-f]*\)".*/> \1/p; s/.*direction="out" frame="\([0-9a-f]*\)".*/< \1/p'
    } >"$out/$name.txt"
}

capture ctl-version-info --get-service-version-info
capture dms-get-ids --dms-get-ids
capture dms-get-operating-mode --dms-get-operating-mode
capture dms-get-capabilities --dms-get-capabilities
capture dms-set-operating-mode-low-power --dms-set-operating-mode=low-power
capture nas-get-signal-info-low-power --nas-get-signal-info
capture dms-set-operating-mode-online --dms-set-operating-mode=online
capture nas-get-signal-info --nas-get-signal-info
capture nas-get-signal-strength --nas-get-signal-strength
capture nas-get-serving-system --nas-get-serving-system
capture nas-get-system-info --nas-get-system-info
capture wds-get-packet-service-status --wds-get-packet-service-status
capture wds-start-network --wds-start-network=apn=internet,ip-type=4 --client-no-release-cid
capture wds-get-current-settings --wds-get-current-settings
capture wds-stop-network --wds-stop-network=268435457 --client-cid=1
capture wda-get-data-format --wda-get-data-format
capture wds-set-ip-family --wds-set-ip-family=4
capture wda-set-data-format --wda-set-data-format=link-layer-protocol=raw-ip,ul-protocol=qmap,dl-protocol=qmap,dl-datagram-max-size=32768,dl-max-datagrams=32,ep-type=hsusb,ep-iface-number=4
capture uim-get-card-status --uim-get-card-status
capture uim-get-slot-status --uim-get-slot-status
