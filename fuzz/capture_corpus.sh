#!/usr/bin/env bash
# Rebuild the committed fuzz seeds (fuzz/seeds/{decode,session}) from real
# client <-> mosquitto traffic: the FaultProxy tests run with MQTT_CAPTURE_DIR
# set, so every proxied connection leaves <test>-<port>-<conn>-{up,down}.bin;
# fuzz/corpus_split.rs (cargo example corpus_split) turns those into seed candidates (stream prefixes
# and single packets for `decode`, broker->client replays for `session`), and
# `cargo fuzz cmin` keeps the ones that add coverage; `v5_seeds.py` then adds
# the hand-made MQTT 5 session seeds (seeds/session/v5-*).
#
#   fuzz/capture_corpus.sh            # needs mosquitto and cargo-fuzz
#   KEEP_CAPTURES=dir fuzz/capture_corpus.sh   # also keep the raw captures
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
captures=${KEEP_CAPTURES:-$work/captures}
mkdir -p "$captures"

MQTT_CAPTURE_DIR="$captures" cargo test --test chaos --test reconnect --test harness
cargo run --example corpus_split -- "$captures" "$work/decode" "$work/session"

cd fuzz
for target in decode session; do
    rm -rf "seeds/$target"
    mkdir -p seeds
    cp -r "$work/$target" "seeds/$target"
    RUSTC_BOOTSTRAP=1 cargo fuzz cmin "$target" "seeds/$target"
    echo "seeds/$target: $(ls "seeds/$target" | wc -l) files, $(du -sh "seeds/$target" | cut -f1)"
done
# The hand-made MQTT 5 session seeds, which no capture has.
python3 v5_seeds.py
