package service

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// device describes what this worker runs on: the GPU CUDA_VISIBLE_DEVICES
// names (its name and memory from NVML), or "cpu" and the machine's memory
// when there is no GPU or no NVML library. NVML is loaded at run time and
// fails soft, so the worker runs on machines without NVIDIA drivers.
func device() (name string, total, used uint64) {
	total, used = memoryInfo()
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		return "cpu", total, used
	}
	defer nvml.Shutdown()
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS || n == 0 {
		return "cpu", total, used
	}
	// NVML numbers every GPU; CUDA_VISIBLE_DEVICES picks this worker's.
	idx := 0
	if v := strings.Split(os.Getenv("CUDA_VISIBLE_DEVICES"), ",")[0]; v != "" {
		if i, err := strconv.Atoi(v); err == nil && i >= 0 && i < n {
			idx = i
		}
	}
	d, ret := nvml.DeviceGetHandleByIndex(idx)
	if ret != nvml.SUCCESS {
		return "cpu", total, used
	}
	if s, ret := d.GetName(); ret == nvml.SUCCESS {
		name = s
	}
	if m, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
		total, used = m.Total, m.Used
	}
	return name, total, used
}

// memoryInfo reports the machine's total and used memory in bytes.
func memoryInfo() (total, used uint64) {
	t, avail := readMeminfo()
	if t > avail {
		used = t - avail
	}
	return t, used
}

// readMeminfo reads MemTotal and MemAvailable from /proc/meminfo (zeros
// where it is unreadable).
func readMeminfo() (total, avail uint64) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "MemTotal":
			total = n << 10
		case "MemAvailable":
			avail = n << 10
		}
	}
	return total, avail
}
