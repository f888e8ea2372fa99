#!/usr/bin/env bash
# The whole test suite: installs what the tests need (idempotent), then runs every crate's unit
# tests and the black-box suite against the real coreplex binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo test --workspace --all-targets
