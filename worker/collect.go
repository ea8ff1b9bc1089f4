package worker

import (
	"errors"
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/worker/client"
)

// ErrNoDriver is wrapped by every error that means NVML cannot be used on this host at all:
// libnvidia-ml.so.1 is missing or the kernel driver is not loaded.
var ErrNoDriver = errors.New("NVIDIA driver not available")

type driverError struct{ msg string }

func (e *driverError) Error() string { return e.msg }
func (e *driverError) Unwrap() error { return ErrNoDriver }

const noDriverMsg = "NVIDIA driver (libnvidia-ml.so.1) not found: install the NVIDIA driver, or try --simulate dgxh100"

// nvmlError is an NVML call that failed with something other than "not supported".
type nvmlError struct {
	gpu  int // -1 for host-level calls
	call string
	ret  nvml.Return
}

func (e *nvmlError) Error() string {
	if e.gpu < 0 {
		return fmt.Sprintf("nvml %s: %s", e.call, e.ret.Error())
	}
	return fmt.Sprintf("nvml GPU %d %s: %s", e.gpu, e.call, e.ret.Error())
}

// absent reports whether ret means "this field does not exist here" rather than a failure:
// ERROR_NOT_SUPPORTED (the GPU or driver lacks it) and ERROR_FUNCTION_NOT_FOUND (a driver
// older than the function). Both leave the snapshot field at its zero value.
func absent(ret nvml.Return) bool {
	return ret == nvml.ERROR_NOT_SUPPORTED || ret == nvml.ERROR_FUNCTION_NOT_FOUND
}

// guard calls f. go-nvml's mocks panic on any function left unset ("...Func: method is nil but
// ... was just called"); guard turns exactly that panic into ERROR_NOT_SUPPORTED, so a partial
// mock reads as a GPU without the feature. Any other panic is re-raised.
func guard[T any](f func() (T, nvml.Return)) (v T, ret nvml.Return) {
	defer func() {
		if p := recover(); p != nil {
			if s, ok := p.(string); ok && strings.Contains(s, "method is nil") {
				var zero T
				v, ret = zero, nvml.ERROR_NOT_SUPPORTED
				return
			}
			panic(p)
		}
	}()
	return f()
}

func guardRet(f func() nvml.Return) nvml.Return {
	_, ret := guard(func() (struct{}, nvml.Return) { return struct{}{}, f() })
	return ret
}

// withNVML runs fn between NVML's Init and Shutdown. It returns the openNVML error without
// running fn, or fn's result with a failed Shutdown joined to its error.
func withNVML[T any](lib nvml.Interface, fn func() (T, error)) (out T, err error) {
	shutdown, err := openNVML(lib)
	if err != nil {
		return out, err
	}
	defer func() {
		if serr := shutdown(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	return fn()
}

// openNVML initialises lib and returns the matching shutdown. A nil lib, a missing library
// and an unloaded kernel driver all return an error wrapping ErrNoDriver.
func openNVML(lib nvml.Interface) (shutdown func() error, err error) {
	if lib == nil {
		return nil, &driverError{noDriverMsg}
	}
	switch ret := guardRet(lib.Init); ret {
	case nvml.SUCCESS:
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return nil, &driverError{noDriverMsg}
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return nil, &driverError{"NVIDIA kernel driver not loaded (libnvidia-ml.so.1 is present; nvml Init: ERROR_DRIVER_NOT_LOADED): " +
			"load the driver (nvidia-smi should work), or try --simulate dgxh100"}
	default:
		return nil, &nvmlError{gpu: -1, call: "Init", ret: ret}
	}
	return func() error {
		if ret := guardRet(lib.Shutdown); ret != nvml.SUCCESS && !absent(ret) {
			return &nvmlError{gpu: -1, call: "Shutdown", ret: ret}
		}
		return nil
	}, nil
}

// Collect reads the host's GPU snapshot through lib: per GPU the UUID, name, PCI ids and bus
// id, memory total, architecture, compute capability, serial, board part number, vBIOS, max
// clocks, power limit, ECC and MIG mode; per host the driver, NVML and CUDA driver versions.
// It pairs Init with Shutdown. A field NVML answers with ERROR_NOT_SUPPORTED (or
// ERROR_FUNCTION_NOT_FOUND, or a mock function left unset) is left absent. It returns an error
// wrapping ErrNoDriver when NVML cannot be loaded, and an error naming the GPU and call for any
// other NVML failure (Shutdown's included).
func Collect(lib nvml.Interface) (attest.Snapshot, error) {
	return withNVML(lib, func() (attest.Snapshot, error) { return collect(lib) })
}

func collect(lib nvml.Interface) (attest.Snapshot, error) {
	var s attest.Snapshot
	var err error
	if s.DriverVersion, err = field(-1, "SystemGetDriverVersion", lib.SystemGetDriverVersion); err != nil {
		return s, err
	}
	if s.NVMLVersion, err = field(-1, "SystemGetNVMLVersion", lib.SystemGetNVMLVersion); err != nil {
		return s, err
	}
	if s.CUDADriverVersion, err = field(-1, "SystemGetCudaDriverVersion", lib.SystemGetCudaDriverVersion); err != nil {
		return s, err
	}
	n, ret := guard(lib.DeviceGetCount)
	if ret != nvml.SUCCESS {
		return s, &nvmlError{gpu: -1, call: "DeviceGetCount", ret: ret}
	}
	if n > attest.MaxSnapshotGPUs {
		return s, fmt.Errorf("nvml reports %d GPUs; the gateway accepts at most %d per host", n, attest.MaxSnapshotGPUs)
	}
	for i := range n {
		dev, ret := guard(func() (nvml.Device, nvml.Return) { return lib.DeviceGetHandleByIndex(i) })
		if ret != nvml.SUCCESS {
			return s, &nvmlError{gpu: i, call: "DeviceGetHandleByIndex", ret: ret}
		}
		g, err := collectGPU(i, dev)
		if err != nil {
			return s, err
		}
		s.GPUs = append(s.GPUs, g)
	}
	return s, nil
}

// field calls an NVML getter: the value on success, the zero value when the field is absent
// (see absent), an error otherwise.
func field[T any](gpu int, call string, f func() (T, nvml.Return)) (T, error) {
	v, ret := guard(f)
	switch {
	case ret == nvml.SUCCESS:
		return v, nil
	case absent(ret):
		var zero T
		return zero, nil
	}
	var zero T
	return zero, &nvmlError{gpu: gpu, call: call, ret: ret}
}

func collectGPU(i int, dev nvml.Device) (attest.GPU, error) {
	var g attest.GPU
	var err error
	if g.UUID, err = field(i, "GetUUID", dev.GetUUID); err != nil {
		return g, err
	}
	if g.Name, err = field(i, "GetName", dev.GetName); err != nil {
		return g, err
	}
	pci, ret := guard(dev.GetPciInfo)
	switch {
	case ret == nvml.SUCCESS:
		dev, vendor := attest.SplitPCIID(pci.PciDeviceId)
		g.PCIDeviceID, g.PCIVendorID = uint32(dev), vendor
		g.PCISubsystemID = pci.PciSubSystemId
		g.BusID = cString(pci.BusId[:])
		if g.BusID == "" {
			g.BusID = cString(pci.BusIdLegacy[:])
		}
	case !absent(ret):
		return g, &nvmlError{gpu: i, call: "GetPciInfo", ret: ret}
	}
	mem, err := field(i, "GetMemoryInfo", dev.GetMemoryInfo)
	if err != nil {
		return g, err
	}
	g.MemoryTotalBytes = mem.Total
	arch, err := field(i, "GetArchitecture", dev.GetArchitecture)
	if err != nil {
		return g, err
	}
	if arch != 0 {
		g.Architecture = attest.ArchitectureName(uint32(arch))
	}
	major, minor, ret := guard3(dev.GetCudaComputeCapability)
	switch {
	case ret == nvml.SUCCESS:
		g.ComputeMajor, g.ComputeMinor = major, minor
	case !absent(ret):
		return g, &nvmlError{gpu: i, call: "GetCudaComputeCapability", ret: ret}
	}
	if g.Serial, err = field(i, "GetSerial", dev.GetSerial); err != nil {
		return g, err
	}
	if g.BoardPartNumber, err = field(i, "GetBoardPartNumber", dev.GetBoardPartNumber); err != nil {
		return g, err
	}
	if g.VBIOSVersion, err = field(i, "GetVbiosVersion", dev.GetVbiosVersion); err != nil {
		return g, err
	}
	if g.MaxSMClockMHz, err = field(i, "GetMaxClockInfo(SM)", func() (uint32, nvml.Return) { return dev.GetMaxClockInfo(nvml.CLOCK_SM) }); err != nil {
		return g, err
	}
	if g.MaxMemClockMHz, err = field(i, "GetMaxClockInfo(MEM)", func() (uint32, nvml.Return) { return dev.GetMaxClockInfo(nvml.CLOCK_MEM) }); err != nil {
		return g, err
	}
	if g.PowerLimitMilliwatts, err = field(i, "GetPowerManagementLimit", dev.GetPowerManagementLimit); err != nil {
		return g, err
	}
	ecc, _, ret := guard3(dev.GetEccMode)
	switch {
	case ret == nvml.SUCCESS:
		g.ECCEnabled = ptr(ecc == nvml.FEATURE_ENABLED)
	case !absent(ret):
		return g, &nvmlError{gpu: i, call: "GetEccMode", ret: ret}
	}
	mig, _, ret := guard3(dev.GetMigMode)
	switch {
	case ret == nvml.SUCCESS:
		g.MIGEnabled = ptr(mig == nvml.DEVICE_MIG_ENABLE)
	case !absent(ret):
		return g, &nvmlError{gpu: i, call: "GetMigMode", ret: ret}
	}
	return g, nil
}

// guard3 is guard for NVML getters returning two values.
func guard3[A, B any](f func() (A, B, nvml.Return)) (A, B, nvml.Return) {
	type pair struct {
		a A
		b B
	}
	p, ret := guard(func() (pair, nvml.Return) {
		a, b, ret := f()
		return pair{a, b}, ret
	})
	return p.a, p.b, ret
}

func ptr[T any](v T) *T { return &v }

// cString converts a NUL-terminated C char array to a string.
func cString[T int8 | uint8](b []T) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// Readings returns the per-GPU telemetry a heartbeat carries (utilization, temperature,
// memory used, power draw). Telemetry is best effort: a reading NVML cannot give, or gives
// outside the gateway's accepted range, is left out; only an NVML that cannot be opened or
// enumerated is an error (wrapping ErrNoDriver when the driver is missing).
func Readings(lib nvml.Interface) ([]client.GpuReadingInput, error) {
	return withNVML(lib, func() ([]client.GpuReadingInput, error) { return readings(lib) })
}

func readings(lib nvml.Interface) (out []client.GpuReadingInput, err error) {
	n, ret := guard(lib.DeviceGetCount)
	if ret != nvml.SUCCESS {
		return nil, &nvmlError{gpu: -1, call: "DeviceGetCount", ret: ret}
	}
	for i := range min(n, 64) {
		dev, ret := guard(func() (nvml.Device, nvml.Return) { return lib.DeviceGetHandleByIndex(i) })
		if ret != nvml.SUCCESS {
			return nil, &nvmlError{gpu: i, call: "DeviceGetHandleByIndex", ret: ret}
		}
		uuid, ret := guard(dev.GetUUID)
		if ret != nvml.SUCCESS || uuid == "" || len(uuid) > 96 {
			continue
		}
		r := client.GpuReadingInput{Uuid: uuid}
		if u, ret := guard(dev.GetUtilizationRates); ret == nvml.SUCCESS && u.Gpu <= 100 {
			r.UtilizationPercent = ptr(int(u.Gpu))
		}
		if t, ret := guard(func() (uint32, nvml.Return) { return dev.GetTemperature(nvml.TEMPERATURE_GPU) }); ret == nvml.SUCCESS && t <= 200 {
			r.TemperatureC = ptr(int(t))
		}
		if m, ret := guard(dev.GetMemoryInfo); ret == nvml.SUCCESS && m.Used>>20 < 1<<24 {
			r.MemoryUsedMiB = ptr(int(m.Used >> 20))
		}
		if p, ret := guard(dev.GetPowerUsage); ret == nvml.SUCCESS && p/1000 <= 100_000 {
			r.PowerWatts = ptr(int(p / 1000))
		}
		out = append(out, r)
	}
	return out, nil
}
