package cluster

import (
	"slices"
	"testing"
)

func TestBackendFor(t *testing.T) {
	for _, c := range []struct {
		want    string
		tp      int
		devices []string
		out     string
	}{
		{"auto", 1, nil, "cpu"},
		{"auto", 2, []string{"0"}, "cpu"},
		{"auto", 2, []string{"0", "1"}, "cuda"},
		{"cpu", 1, []string{"0"}, "cpu"},
		{"cuda", 1, nil, "cuda"}, // refused later, with the reason, by launch
	} {
		if got := BackendFor(c.want, c.tp, c.devices); got != c.out {
			t.Errorf("BackendFor(%q, %d, %v) = %q, want %q", c.want, c.tp, c.devices, got, c.out)
		}
	}
}

func TestGPUsFollowVisibleDevices(t *testing.T) {
	t.Setenv("CUDA_VISIBLE_DEVICES", "2, 3,")
	if got := GPUs(); !slices.Equal(got, []string{"2", "3"}) {
		t.Fatalf("GPUs() = %v", got)
	}
	t.Setenv("CUDA_VISIBLE_DEVICES", "")
	if got := GPUs(); len(got) != 0 {
		t.Fatalf("empty CUDA_VISIBLE_DEVICES: %v", got)
	}
}
