package main

import "github.com/idefics2-go/idefics2/runner"

// cpuReport is the CPU part of info's report, with the snake_case keys the rest of its JSON uses.
type cpuReport struct {
	Brand         string   `json:"brand"`
	Vendor        string   `json:"vendor"`
	Arch          string   `json:"arch"`
	PhysicalCores int      `json:"physical_cores"`
	LogicalCores  int      `json:"logical_cores"`
	Features      []string `json:"features"`
}

func newCPUReport(c runner.CPUInfo) cpuReport {
	return cpuReport{Brand: c.Brand, Vendor: c.Vendor, Arch: c.Arch, PhysicalCores: c.PhysicalCores, LogicalCores: c.LogicalCores,
		Features: c.Features}
}
