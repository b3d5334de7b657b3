// Package fleettest holds the scale-out test of `idefics2-run serve` (build tag fleet, run by `make test-fleet`):
// two replicas of the demo model behind HAProxy, whose health checks read /ready, take a bounded load with images
// while one replica is stopped with SIGTERM; every request must get its full, correct answer and the stopped
// replica must drain and exit 0. The package has no code outside that test.
package fleettest
