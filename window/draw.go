package window

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"headinfer/bytesize"
	"headinfer/engine"
)

// The palette. The slot colours and the slot map's frame colour are used
// nowhere else in the frame, so that a captured frame can be checked
// against the plan (see tests/window_test.go and the README's legend).
var (
	colBackground = color.RGBA{22, 24, 29, 255}
	colPanel      = color.RGBA{32, 35, 42, 255}
	colText       = color.RGBA{222, 224, 228, 255}
	colDim        = color.RGBA{140, 146, 158, 255}
	colSlotFrame  = color.RGBA{90, 96, 110, 255}
	colHighlight  = color.RGBA{255, 210, 60, 255}
	colPaused     = color.RGBA{240, 120, 60, 255}

	// Slot placements, indexed by engine.Placement.
	colSlot = [...]color.RGBA{
		engine.SlotResident: {60, 179, 113, 255},
		engine.SlotStreamed: {70, 130, 220, 255},
	}

	colWeights     = color.RGBA{150, 150, 160, 255}
	colActivations = color.RGBA{200, 140, 90, 255}
	colStreaming   = color.RGBA{110, 160, 235, 255}
	colResidentKV  = color.RGBA{80, 200, 130, 255}
	colPrefill     = color.RGBA{230, 170, 70, 255}
	colDecode      = color.RGBA{120, 200, 240, 255}
)

// Frame geometry in pixels.
const (
	margin     = 12
	lineHeight = 15
	charWidth  = 7 // basicfont.Face7x13
)

// canvas draws on an RGBA image.
type canvas struct {
	img  *image.RGBA
	face font.Face
}

func (c canvas) fill(r image.Rectangle, col color.RGBA) {
	draw.Draw(c.img, r.Intersect(c.img.Rect), &image.Uniform{col}, image.Point{}, draw.Src)
}

// outline draws a border of width w just inside r.
func (c canvas) outline(r image.Rectangle, w int, col color.RGBA) {
	c.fill(image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+w), col)
	c.fill(image.Rect(r.Min.X, r.Max.Y-w, r.Max.X, r.Max.Y), col)
	c.fill(image.Rect(r.Min.X, r.Min.Y, r.Min.X+w, r.Max.Y), col)
	c.fill(image.Rect(r.Max.X-w, r.Min.Y, r.Max.X, r.Max.Y), col)
}

// text draws s with its baseline at y.
func (c canvas) text(x, y int, s string, col color.RGBA) {
	d := font.Drawer{Dst: c.img, Src: &image.Uniform{col}, Face: c.face, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// drawFrame draws the whole view into img.
func drawFrame(img *image.RGBA, v *view, now time.Time) {
	c := canvas{img: img, face: basicfont.Face7x13}
	b := img.Rect
	c.fill(b, colBackground)
	w, h := b.Dx(), b.Dy()

	// Header: what runs and in which state.
	c.fill(image.Rect(0, 0, w, 26), colPanel)
	c.text(margin, 18, v.title, colText)
	state, col := v.phase, colDim
	switch {
	case v.done && v.serve:
		state = "stopped"
	case v.done:
		state = "done: Esc or close the window to exit"
	case v.paused:
		state, col = "PAUSED: Space resumes", colPaused
	}
	c.text(w-margin-charWidth*len(state), 18, state, col)

	split := w * 9 / 20
	textTop := h * 5 / 8
	drawSlots(c, v, image.Rect(margin, 36, split-margin, textTop-8), now)
	right := image.Rect(split+margin, 36, w-margin, textTop-8)
	y := drawMemory(c, v, right)
	drawRates(c, v, image.Rect(right.Min.X, y+8, right.Max.X, right.Max.Y), now)

	box := image.Rect(margin, textTop, w-margin, h-24)
	c.fill(box, colPanel)
	if v.serve {
		drawLines(c, box, "Requests", v.status)
	} else {
		drawText(c, box, "Generated text", v.text)
	}

	keys := "Space pause/resume   Esc or close: end the run"
	c.text(margin, h-8, keys, colDim)
	info := fmt.Sprintf("frame %d: drawn in %.1f ms, presented in %.1f ms; events %d, dropped %d",
		v.frames, v.frameTime.Seconds()*1e3, v.presTime.Seconds()*1e3, v.events, v.dropped)
	c.text(w-margin-charWidth*len(info), h-8, info, colDim)
}

// drawSlots draws the KV slot map: one cell per (layer, KV head), rows
// are layers, columns KV heads, coloured by placement; streamed slots
// are outlined while their blocks are being copied to the device.
func drawSlots(c canvas, v *view, r image.Rectangle, now time.Time) {
	lay := v.layout
	if lay == nil {
		c.text(r.Min.X, r.Min.Y+12, "KV slots: waiting for the model", colDim)
		return
	}
	c.text(r.Min.X, r.Min.Y+12, fmt.Sprintf("KV slots: %d layers x %d KV heads", lay.Layers, lay.KVHeads), colText)
	legendH := 2 * lineHeight
	area := image.Rect(r.Min.X, r.Min.Y+20, r.Max.X, r.Max.Y-legendH-4)
	pitch := min(area.Dx()/max(lay.KVHeads, 1), area.Dy()/max(lay.Layers, 1), 48)
	if pitch < 3 {
		c.text(area.Min.X, area.Min.Y+12, "too many slots to draw at this window size", colDim)
		return
	}
	gap := max(1, pitch/8)
	// The frame is one pixel wide, around a grid of exactly pitch-sized
	// cells (each a square of pitch−gap with the gap on its right and
	// below), so that a cell's centre is at the centre of its pitch.
	grid := image.Rect(area.Min.X+1, area.Min.Y+1, area.Min.X+1+lay.KVHeads*pitch+gap, area.Min.Y+1+lay.Layers*pitch+gap)
	c.outline(grid.Inset(-1), 1, colSlotFrame)
	copying := v.copying(now)
	for l := 0; l < lay.Layers; l++ {
		for hd := 0; hd < lay.KVHeads; hd++ {
			p := lay.Slots[l*lay.KVHeads+hd]
			cell := image.Rect(grid.Min.X+gap+hd*pitch, grid.Min.Y+gap+l*pitch, grid.Min.X+(hd+1)*pitch, grid.Min.Y+(l+1)*pitch)
			c.fill(cell, colSlot[p])
			if copying && p == engine.SlotStreamed && pitch >= 8 {
				c.outline(cell, max(1, pitch/10), colHighlight)
			}
		}
	}
	ly := r.Max.Y - legendH + 10
	x := r.Min.X
	for _, it := range []struct {
		name string
		col  color.RGBA
	}{
		{"resident", colSlot[engine.SlotResident]},
		{"streamed from host", colSlot[engine.SlotStreamed]},
	} {
		c.fill(image.Rect(x, ly-9, x+10, ly+1), it.col)
		c.text(x+14, ly, it.name, colText)
		x += 14 + charWidth*len(it.name) + 16
	}
	c.outline(image.Rect(x, ly-9, x+10, ly+1), 2, colHighlight)
	c.text(x+14, ly, "copying to the device", colText)
	p := lay.Plan
	c.text(r.Min.X, ly+lineHeight, fmt.Sprintf("%d resident, %d streamed, offload %s, context %d", p.Resident, p.Streamed, p.Mode, p.CtxSize), colDim)
}

// drawMemory draws device memory by kind against the budget and the host
// KV store, and returns the y below it.
func drawMemory(c canvas, v *view, r image.Rectangle) int {
	y := r.Min.Y + 12
	if v.layout == nil {
		return y
	}
	p := v.layout.Plan
	c.text(r.Min.X, y, fmt.Sprintf("Device memory: budget %s (%s)", bytesize.Format(p.Budget), p.BudgetFrom), colText)
	y += 6
	bar := image.Rect(r.Min.X, y, r.Max.X, y+16)
	c.fill(bar, colPanel)
	kinds := []struct {
		name string
		n    uint64
		col  color.RGBA
	}{
		{"weights", p.Weights, colWeights},
		{"activations", p.Activations, colActivations},
		{"streaming buffers", p.Streaming, colStreaming},
		{"resident KV", p.ResidentKV, colResidentKV},
	}
	x := bar.Min.X
	for _, k := range kinds {
		wd := 0
		if p.Budget > 0 {
			wd = int(float64(bar.Dx()) * float64(k.n) / float64(p.Budget))
		}
		if k.n > 0 {
			wd = max(wd, 2) // visible however small against the budget
		}
		c.fill(image.Rect(x, bar.Min.Y, min(x+wd, bar.Max.X), bar.Max.Y), k.col)
		x += wd
	}
	y = bar.Max.Y + lineHeight
	for i, k := range kinds {
		cx := r.Min.X + (i%2)*(r.Dx()/2)
		cy := y + (i/2)*lineHeight
		c.fill(image.Rect(cx, cy-9, cx+10, cy+1), k.col)
		c.text(cx+14, cy, fmt.Sprintf("%s %s", k.name, bytesize.Format(k.n)), colText)
	}
	y += 2 * lineHeight
	c.text(r.Min.X, y, fmt.Sprintf("device in use %s (peak %s) of %s; host KV %s",
		bytesize.Format(v.memory.DeviceBytes), bytesize.Format(v.memory.DeviceBytesPeak),
		bytesize.Format(p.Budget), bytesize.Format(p.HostKV)), colDim)
	return y + 4
}

// drawRates draws tokens per second over the last minute and the bytes
// copied to the device per token.
func drawRates(c canvas, v *view, r image.Rectangle, now time.Time) {
	sum := v.rates(now)
	y := r.Min.Y + 12
	c.text(r.Min.X, y, "Tokens per second, last minute", colText)
	y += lineHeight
	rate := func(n int, d time.Duration) string {
		if d <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(n)/d.Seconds())
	}
	c.fill(image.Rect(r.Min.X, y-9, r.Min.X+10, y+1), colPrefill)
	c.text(r.Min.X+14, y, fmt.Sprintf("prefill %s tok/s (%d tokens)", rate(sum.prefillTok, sum.prefillT), sum.prefillTok), colText)
	cx := r.Min.X + r.Dx()/2
	c.fill(image.Rect(cx, y-9, cx+10, y+1), colDecode)
	c.text(cx+14, y, fmt.Sprintf("decode %s tok/s (%d tokens)", rate(sum.decodeTok, sum.decodeT), sum.decodeTok), colText)
	y += lineHeight
	perTok := "-"
	if n := sum.prefillTok + sum.decodeTok; n > 0 {
		perTok = bytesize.Format(sum.h2d/uint64(n)) + " per token"
	}
	c.text(r.Min.X, y, "KV copied to the device: "+perTok, colText)
	y += 6

	// One pair of bars per second: tokens that second, scaled to the
	// busiest second of the minute.
	g := image.Rect(r.Min.X, y, r.Max.X, r.Max.Y-lineHeight)
	if g.Dy() < 20 {
		return
	}
	c.fill(g, colPanel)
	pre, dec := v.history(now)
	top := 1
	for i := range pre {
		top = max(top, pre[i], dec[i])
	}
	bw := g.Dx() / rateWindow
	for i := range pre {
		x := g.Min.X + i*bw
		for j, n := range []int{pre[i], dec[i]} {
			if n == 0 {
				continue
			}
			hh := max(1, (g.Dy()-4)*n/top)
			col := colPrefill
			if j == 1 {
				col = colDecode
			}
			half := max(1, (bw-1)/2)
			c.fill(image.Rect(x+j*half, g.Max.Y-hh, x+(j+1)*half, g.Max.Y), col)
		}
	}
	c.text(g.Min.X, g.Max.Y+lineHeight-2, fmt.Sprintf("-60 s          busiest second: %d tokens", top), colDim)
	c.text(g.Max.X-charWidth*3, g.Max.Y+lineHeight-2, "now", colDim)
}

// drawText draws the tail of s, wrapped, that fits in box.
func drawText(c canvas, box image.Rectangle, title, s string) {
	c.text(box.Min.X+6, box.Min.Y+14, title, colDim)
	cols := max(1, (box.Dx()-12)/charWidth)
	rows := max(1, (box.Dy()-24)/lineHeight)
	lines := wrap(s, cols)
	if len(lines) > rows {
		lines = lines[len(lines)-rows:]
	}
	for i, ln := range lines {
		c.text(box.Min.X+6, box.Min.Y+20+(i+1)*lineHeight, ln, colText)
	}
}

// drawLines draws lines in box, as many as fit.
func drawLines(c canvas, box image.Rectangle, title string, lines []string) {
	c.text(box.Min.X+6, box.Min.Y+14, title, colDim)
	rows := max(1, (box.Dy()-24)/lineHeight)
	for i, ln := range lines[:min(len(lines), rows)] {
		c.text(box.Min.X+6, box.Min.Y+20+(i+1)*lineHeight, ln, colText)
	}
}

// wrap breaks s into lines of at most cols runes, at spaces where it can.
func wrap(s string, cols int) []string {
	var out []string
	for _, para := range strings.Split(s, "\n") {
		line := []rune{}
		for _, word := range strings.SplitAfter(para, " ") {
			wr := []rune(word)
			if len(line)+len(wr) > cols && len(line) > 0 {
				out = append(out, string(line))
				line = line[:0]
			}
			for len(wr) > cols {
				out = append(out, string(wr[:cols]))
				wr = wr[cols:]
			}
			line = append(line, wr...)
		}
		out = append(out, string(line))
	}
	return out
}
