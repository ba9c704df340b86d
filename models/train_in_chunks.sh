#!/usr/bin/env bash
# Train a recipe in chunks, resuming from its checkpoint: each chunk writes the network (so it can be
# judged while training goes on) and a checkpoint, and a later call (another session, after a reboot)
# carries on from the last chunk bit for bit. Stop it at any time; nothing half-written is left.
#
#   models/train_in_chunks.sh models/fmnist_unet_a.json [CHUNK_STEPS] [MIX_TRAIN_BINARY]
set -euo pipefail
recipe=$1
chunk=${2:-500}
bin=${3:-target/release/mix-train}
steps=$(grep -o '"steps": *[0-9]*' "$recipe" | head -1 | grep -o '[0-9]*$')
out=$(grep -o '"out": *"[^"]*"' "$recipe" | head -1 | sed 's/.*: *"\(.*\)"/\1/')
ckpt="${out}.ckpt.safetensors"
done_steps=0
if [ -f "$ckpt" ]; then
    # The checkpoint's header records train_step.
    done_steps=$(head -c 200000 "$ckpt" | grep -ao '"train_step":"[0-9]*"' | head -1 | grep -o '[0-9]*' || echo 0)
fi
while [ "$done_steps" -lt "$steps" ]; do
    stop=$(( (done_steps / chunk + 1) * chunk ))
    [ "$stop" -gt "$steps" ] && stop=$steps
    resume=()
    [ -f "$ckpt" ] && resume=(--resume "$ckpt")
    "$bin" --recipe "$recipe" --stop-at "$stop" "${resume[@]}" --quiet
    echo "$(date -u +%FT%TZ) $recipe: $stop of $steps steps"
    done_steps=$stop
done
