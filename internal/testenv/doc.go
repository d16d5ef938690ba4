// Package testenv starts the real parts the tests run against: a Restate server (the pinned npm
// build, installed by scripts/tools.sh) on free loopback ports with a fresh base dir, and the
// helpers to reach it. It never mocks Restate; when a part is missing it fails and says how to
// install it.
package testenv
