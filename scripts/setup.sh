#!/usr/bin/env bash
# Create .venv and install poisonlab with its test tools. torch==2.13.0 is installed first: on a CPU-only machine
# that version is the CPU build (set POISONLAB_TORCH to choose another, e.g. "torch" for your platform's default).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "${POISONLAB_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
