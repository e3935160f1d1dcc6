// Package shaders holds the engine's GLSL compute kernels and the SPIR-V
// that `make shaders` compiles from them. The SPIR-V is committed and
// embedded so that building the engine needs no shader compiler.
package shaders

import (
	"embed"
	"fmt"
)

//go:embed *.spv
var spirv embed.FS

// SPIRV returns the compiled module of the kernel NAME (the file NAME.comp).
func SPIRV(name string) ([]byte, error) {
	b, err := spirv.ReadFile(name + ".spv")
	if err != nil {
		return nil, fmt.Errorf("shaders: no compiled kernel %q (run make shaders)", name)
	}
	return b, nil
}

// MustSPIRV is SPIRV for kernels that are part of the build; a missing one
// is a programming error.
func MustSPIRV(name string) []byte {
	b, err := SPIRV(name)
	if err != nil {
		panic(err)
	}
	return b
}
