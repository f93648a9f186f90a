#!/usr/bin/env bash
# Benchmark: CPU per concurrent call of the media path in echo mode.
#
# Starts the release binary on loopback, lets SIPp hold CALLS concurrent PCMU calls that
# carry speech both ways (caller RTP in, echo RTP out), and reads the appliance's own CPU
# time from /proc over a steady window while all calls are up. SIPp's CPU is not counted.
#   scripts/bench-echo.sh [CALLS=100] [WINDOW_S=15]
# Prints CPU %-of-one-core per call and per-call RSS growth.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CALLS=${1:-100}; WINDOW=${2:-15}
SIP=25060; HTTP=29190; RTP_LOW=40000; RTP_HIGH=$((40000 + CALLS * 4 + 100)); PEER=25070; PEER_RTP=50000
"$ROOT/scripts/setup.sh" --test >/dev/null
cargo build --release --locked --bin switchboard 2>&1 | tail -1
W=$(mktemp -d /tmp/switchboard-bench.XXXX)
trap 'kill $SB $SIPP 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$W/pcap"
# The caller's sentence as a SIPp RTP pcap (same recipe as the tests' fixtures).
espeak-ng -v en-us -s 160 -w "$W/s22.wav" "Hello, this is a test call. Can you hear me?"
sox "$W/s22.wav" -r 8000 -c 1 -b 16 -e signed-integer "$W/s8.wav"
python3 - "$W/s8.wav" "$W/pcap/speech_pcmu.pcap" <<'PY'
import struct, sys, wave
w = wave.open(sys.argv[1]); pcm = struct.unpack("<%dh" % w.getnframes(), w.readframes(w.getnframes()))
def ulaw(s):
    s >>= 2; mask = 0xFF
    if s < 0: s, mask = -s, 0x7F
    s = min(s, 8159) + 33; seg = 0
    while seg < 8 and s > (0x3F,0x7F,0xFF,0x1FF,0x3FF,0x7FF,0xFFF,0x1FFF)[seg]: seg += 1
    return (0x7F ^ mask) if seg >= 8 else (((seg << 4) | ((s >> (seg + 1)) & 0xF)) ^ mask)
data = bytes(ulaw(s) for s in pcm); f = open(sys.argv[2], "wb")
f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
for i in range(0, len(data) - 160, 160):
    rtp = struct.pack("!BBHII", 0x80, 0, i // 160, i, 0x1234) + data[i:i + 160]
    udp = struct.pack("!HHHH", 40000, 6000, 8 + len(rtp), 0) + rtp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([127,0,0,1]), bytes([127,0,0,1]))
    fr = b"\0" * 12 + b"\x08\x00" + ip + udp; t = i // 8 * 1000
    f.write(struct.pack("<IIII", t // 1000000, t % 1000000, len(fr), len(fr)) + fr)
PY
cat > "$W/bench.yaml" <<YAML
logging: { level: warn }
routes:
  - match: "*"
    agent: echo
agents:
  echo:
    mode: echo
    echo_delay_ms: 300
YAML
target/release/switchboard run --config "$W/bench.yaml" --sip-listen 127.0.0.1:$SIP --http-listen 127.0.0.1:$HTTP --rtp-ports $RTP_LOW-$RTP_HIGH > "$W/sb.log" 2>&1 & SB=$!
sleep 1
cpu() { awk '{print $14 + $15}' /proc/$SB/stat; }
ucpu() { awk '{print $14}' /proc/$SB/stat; }
rss() { awk '/VmRSS/{print $2}' /proc/$SB/status; }
metric() { curl -s 127.0.0.1:$HTTP/metrics | awk -v m="$1" '$1==m{print $2}'; }
RSS0=$(rss)
(cd "$W" && sipp 127.0.0.1:$SIP -sf "$ROOT/tests/scenarios/uac_bench_echo.xml" -s 1000 -i 127.0.0.1 -p $PEER -mi 127.0.0.1 -mp $PEER_RTP \
   -m "$CALLS" -r 50 -l "$CALLS" -nostdin -trace_screen -screen_file "$W/sipp.screen" > "$W/sipp.out" 2>&1) & SIPP=$!
# Wait until every call is up, then measure a steady window.
for _ in $(seq 1 100); do [ "$(metric switchboard_active_calls)" = "$CALLS" ] && break; sleep 0.1; done
ACTIVE=$(metric switchboard_active_calls)
sleep 1
TCK=$(getconf CLK_TCK); C0=$(cpu); U0=$(ucpu); P0=$(metric 'switchboard_rtp_packets_total{direction="in"}'); T0=$(date +%s.%N)
if [ -n "${PERF_OUT:-}" ]; then perf record -F 999 -g -p $SB -o "$PERF_OUT" -- sleep "$WINDOW" >/dev/null 2>&1; else sleep "$WINDOW"; fi
C1=$(cpu); U1=$(ucpu); P1=$(metric 'switchboard_rtp_packets_total{direction="in"}'); T1=$(date +%s.%N); RSS1=$(rss)
ACTIVE1=$(metric switchboard_active_calls)
wait $SIPP || true
OK=$(grep -E '^ +Successful call' "$W/sipp.screen" | awk '{print $NF}' | tail -1)
FAIL=$(grep -E '^ +Failed call' "$W/sipp.screen" | awk '{print $NF}' | tail -1)
awk  -v c0="$C0" -v c1="$C1" -v u0="$U0" -v u1="$U1" -v t0="$T0" -v t1="$T1" -v tck="$TCK" -v n="$ACTIVE" -v n1="$ACTIVE1" -v p0="$P0" -v p1="$P1" \
    -v r0="$RSS0" -v r1="$RSS1" -v ok="$OK" -v fail="$FAIL" 'BEGIN {
  wall = t1 - t0; cpu = (c1 - c0) / tck; pct = 100 * cpu / wall;
  printf "calls active during window: %d..%d (SIPp: %s successful, %s failed)\n", n, n1, ok, fail;
  printf "RTP in during window: %.0f packets/s (%.1f per call per second)\n", (p1 - p0) / wall, (p1 - p0) / wall / n;
  printf "appliance CPU: %.2f%% of one core for %d calls = %.4f%% of a core per call\n", pct, n, pct / n;
  printf "  of which user space %.4f%%, kernel (UDP syscalls, epoll, scheduling) %.4f%% per call\n", 100 * (u1 - u0) / tck / wall / n, 100 * ((c1 - c0) - (u1 - u0)) / tck / wall / n;
  printf "RSS: %.1f MiB idle, %.1f MiB with %d calls (%.0f KiB per call)\n", r0 / 1024, r1 / 1024, n, (r1 - r0) / n;
}'
