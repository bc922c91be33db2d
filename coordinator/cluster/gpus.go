package cluster

import (
	"os"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// GPUs lists the GPUs the launched workers may use, as CUDA numbers them
// for the coordinator's own CUDA_VISIBLE_DEVICES (every GPU NVML finds
// when it is unset). NVML is loaded at run time and fails soft: no NVIDIA
// driver means no GPUs.
func GPUs() []string {
	if v, ok := os.LookupEnv("CUDA_VISIBLE_DEVICES"); ok {
		var out []string
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				out = append(out, d)
			}
		}
		return out
	}
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		return nil
	}
	defer nvml.Shutdown()
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(i)
	}
	return out
}

// BackendFor picks the launched workers' backend: "auto" is cuda when
// there is a GPU for every rank, else cpu.
func BackendFor(want string, tp int, devices []string) string {
	if want != "auto" {
		return want
	}
	if len(devices) >= tp {
		return "cuda"
	}
	return "cpu"
}
