#!/usr/bin/env bash
# Stand up the GPU worker's ComfyUI, pinned: ComfyUI and each node pack at the commits in
# versions.json, every model file in models.json in its folder, sizes and sha256 checked.
# Run it ON THE GPU MACHINE (it downloads ~25 GB there; the pipeline never downloads anything).
#
#   deploy/comfyui/setup.sh [COMFY_DIR]           (default ~/sparklio-comfyui; safe to run again)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124   (pick your CUDA build; default cu124)
#   HF_TOKEN=...                                  (only if Hugging Face asks you to log in)
#   SKIP_MODELS=1                                 (code only; copy the models in yourself)
#
# Then start it and check it from the pipeline's machine:
#   COMFY_DIR/venv/bin/python COMFY_DIR/ComfyUI/main.py --listen 0.0.0.0 --port 8188
#   sparklio worker check http://GPU_HOST:8188
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${1:-$HOME/sparklio-comfyui}"
PYTHON="${PYTHON:-python3}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu124}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

field() {  # field FILE PYTHON_EXPRESSION_ON_d  → prints lines
  "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); $2" "$1"
}

checkout() {  # checkout REPO COMMIT DEST
  local repo="$1" commit="$2" dest="$3"
  [ -d "$dest/.git" ] || git clone --quiet "$repo" "$dest"
  git -C "$dest" fetch --quiet --tags origin
  git -C "$dest" -c advice.detachedHead=false checkout --quiet "$commit"
  echo "  $(basename "$dest") at $(git -C "$dest" rev-parse --short HEAD)"
}

echo "== ComfyUI and node packs (versions.json) into $DIR"
COMFY="$DIR/ComfyUI"
checkout "$(field "$HERE/versions.json" 'print(d["comfyui"]["repo"])')" \
         "$(field "$HERE/versions.json" 'print(d["comfyui"]["commit"])')" "$COMFY"
[ -x "$DIR/venv/bin/python" ] || "$PYTHON" -m venv "$DIR/venv"
PIP="$DIR/venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
$PIP install --quiet torch torchvision torchaudio --index-url "$TORCH_INDEX_URL"
$PIP install --quiet -r "$COMFY/requirements.txt"
while IFS=$'\t' read -r name repo commit requirements; do
  checkout "$repo" "$commit" "$COMFY/custom_nodes/$name"
  req="$COMFY/custom_nodes/$name/${requirements:-requirements.txt}"
  [ -f "$req" ] && $PIP install --quiet -r "$req"
done < <(field "$HERE/versions.json" \
  'print("\n".join("\t".join([p["name"], p["repo"], p["commit"], p.get("requirements", "")]) for p in d["node_packs"]))')

if [ "${SKIP_MODELS:-0}" = "1" ]; then
  echo "== models skipped (SKIP_MODELS=1): put them where models.json says"
else
  echo "== models (models.json)"
  LOCK="$HERE/models.lock"
  touch "$LOCK"
  while IFS=$'\t' read -r file folder size sha url; do
    dest="$COMFY/$folder/$file"
    mkdir -p "$(dirname "$dest")"
    if [ "$url" = "None" ]; then
      [ -f "$dest" ] && echo "  ✓ $file (yours)" || echo "  · $file: not downloadable; copy it to $dest (optional)"
      continue
    fi
    locked="$(awk -v f="$file" '$2 == f {print $1}' "$LOCK")"
    [ "$sha" = "None" ] && sha="$locked"
    if [ ! -f "$dest" ] || { [ -n "$sha" ] && ! echo "$sha  $dest" | sha256sum --check --status; }; then
      echo "  ↓ $file"
      auth=()
      [ -n "${HF_TOKEN:-}" ] && [[ "$url" == https://huggingface.co/* ]] && auth=(-H "Authorization: Bearer $HF_TOKEN")
      curl -fL --retry 5 -C - ${auth[@]+"${auth[@]}"} -o "$dest.part" "$url"
      mv "$dest.part" "$dest"
    fi
    got_size="$(stat -c %s "$dest")"
    if [ "$size" != "None" ] && [ "$got_size" != "$size" ]; then
      echo "  ✗ $file is $got_size bytes, models.json says $size: delete it and run again" >&2; exit 1
    fi
    got_sha="$(sha256sum "$dest" | cut -d' ' -f1)"
    if [ -n "$sha" ] && [ "$got_sha" != "$sha" ]; then
      echo "  ✗ $file sha256 $got_sha, expected $sha: delete it and run again" >&2; exit 1
    fi
    [ -n "$locked" ] || echo "$got_sha $file $got_size" >> "$LOCK"
    echo "  ✓ $file ($got_size bytes, sha256 ${got_sha:0:12}…)"
  done < <(field "$HERE/models.json" \
    'print("\n".join("\t".join(str(m[k]) for k in ("file", "folder", "size", "sha256", "url")) for m in d["models"]))')
fi

cat <<DONE
== ready to start
  $DIR/venv/bin/python $COMFY/main.py --listen 0.0.0.0 --port 8188
then, from the machine that runs the pipeline:
  sparklio worker check http://$(hostname):8188
(ComfyUI has no authentication: keep port 8188 on a private network.)
DONE
