// Command kstatus prints what sigs.k8s.io/cli-utils/pkg/kstatus/status decides about one
// Kubernetes object, by the rules Flux's health checks (`wait: true`, `healthChecks`) apply to
// custom resources: Reconciling, Stalled, Ready and status.observedGeneration.
//
// It reads one object as JSON on stdin (`kubectl get KIND NAME -o json`) and writes
// {"status": "...", "message": "..."} to stdout, status being one of InProgress, Current,
// Failed, Terminating or Unknown. Input that is not one object exits 2 with the reason on stderr.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  status.Status `json:"status"`
	Message string        `json:"message"`
}

func compute(in io.Reader) (*result, error) {
	data, err := io.ReadAll(in)
	if err != nil {
		return nil, fmt.Errorf("reading stdin: %w", err)
	}
	// the unstructured decoder keeps integers (metadata.generation) as int64, as kstatus needs
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("stdin is not one Kubernetes object as JSON: %w", err)
	}
	if u.IsList() {
		return nil, fmt.Errorf("stdin is a %s: pass one object (kubectl get KIND NAME -o json)", u.GetKind())
	}
	res, err := status.Compute(u)
	if err != nil {
		return nil, fmt.Errorf("kstatus cannot read %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return &result{Status: res.Status, Message: res.Message}, nil
}

func main() {
	res, err := compute(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
