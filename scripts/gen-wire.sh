#!/usr/bin/env bash
# Regenerates shared/wire/wire.pb.go from wire.proto. Needs protoc
# (Debian: protobuf-compiler) and protoc-gen-go at the version go.mod pins:
#   GOBIN=/tmp/gobin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="${GOBIN:-/tmp/gobin}:$PATH" protoc --go_out=. --go_opt=paths=source_relative shared/wire/wire.proto
# The go-plugin gRPC contract (protoc-gen-go-grpc v1.3.0 matches the grpc
# version go-plugin brings):
#   GOBIN=/tmp/gobin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.3.0
PATH="${GOBIN:-/tmp/gobin}:$PATH" protoc --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative shared/plugin/plugin.proto
