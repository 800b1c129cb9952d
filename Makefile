# rdev — every target loops over the workspace modules listed in go.work.
MODULES := $(shell go list -m -f '{{.Dir}}')
PKGS    := $(addsuffix /...,$(MODULES))
GOLANGCI_LINT_VERSION := v2.15.0

.PHONY: help run test test-short lint bench schema tidy

help: ## Show the targets.
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## Run the whole system in one process (embedded NATS, local executor).
	go run ./cmd/rdev up

test: ## Run every test of every module with the race detector.
	go vet $(PKGS)
	go test -race -count=1 -timeout 25m $(PKGS)

test-short: ## Run the fast tests only (skips process-level end-to-end tests).
	go test -short -count=1 $(PKGS)

lint: ## Run golangci-lint (downloaded on first use) over every module.
	go run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) run $(PKGS)

bench: ## Run the benchmarks and print their figures.
	go run ./bench/cmd/rdevbench

schema: ## Regenerate pkg/contracts/schema, the OpenAPI schemas and JSON, and docs/http-api-reference.md from the Go types.
	go run ./cmd/rdev schema --out pkg/contracts/schema

tidy: ## go mod tidy in every module.
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done
