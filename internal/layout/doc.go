// Package layout has no code: its tests pin the project's structure — every
// package documented, and each third-party dependency imported only by the
// packages DEPENDENCIES.md allows.
package layout
