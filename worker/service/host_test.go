package service

import (
	"os"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Without NVIDIA's library (CI, this machine) NVML fails soft: the worker
// is a CPU worker with the machine's memory.
func TestDeviceFailsSoft(t *testing.T) {
	name, total, _ := device()
	if ret := nvml.Init(); ret == nvml.SUCCESS {
		nvml.Shutdown()
		if os.Getenv("CUDA_VISIBLE_DEVICES") != "" && name == "cpu" {
			t.Fatal("NVML works but the device is reported as cpu")
		}
		t.Skipf("a GPU is visible (%s): the CPU fallback is not exercised here", name)
	}
	if name != "cpu" || total == 0 {
		t.Fatalf("device %q, memory %d", name, total)
	}
}
