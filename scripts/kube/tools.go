//go:build tools

// The control plane of the real-Kubernetes test tier (scripts/kube-cluster.sh): this module only
// names the three commands it builds, so that `go build` resolves them through the module proxy.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
