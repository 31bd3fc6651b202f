# Entry points for people and CI. `make` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

demo: ## Set up everything, start the local cluster, run the operator with the example instance
	hack/demo

test: ## Run all checks and tests (starts the local cluster when needed, stops it after)
	hack/test

image: ## Build the operator's image (static binary, OCI layout under target/image) without a container engine
	hack/build-image

crd: ## Regenerate deploy/base/crd.yaml and the Helm chart's copy from the Rust types
	cargo run --quiet --bin redis-operator -- crd > deploy/base/crd.yaml
	cp deploy/base/crd.yaml deploy/helm/redis-operator/crds/crd.yaml

bench: ## Measure rendering, hashing, validation and planning speed
	cargo bench --bench core

bench-scale: ## Measure the operator with N=1000 and 10000 instances on fake nodes (N=1000 for one size)
	hack/bench-scale $(or $(N),1000 10000)

bench-failover: ## Measure lost writes, write gaps and role changes over N rollouts and N primary kills (N=10)
	hack/bench-failover --rollouts $(or $(N),10) --kills $(or $(N),10)

cluster-up: ## Start the local control plane and node agent
	hack/local-cluster up

cluster-down: ## Stop the local cluster and remove its state
	hack/local-cluster down

cluster-status: ## Show whether the local cluster is running
	hack/local-cluster status

.PHONY: help demo test image crd bench bench-scale bench-failover cluster-up cluster-down cluster-status
