package cli

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strings"
)

// series names a result's line in the plot: its offload mode, where
// decode attended streamed heads when something streams, and the KV type
// when the run compared several.
func (r contextResult) series() string {
	s := "offload " + r.Offload
	if r.Streamed > 0 && r.DecodeAttn != "" {
		s += ", attn " + r.DecodeAttn
	}
	if r.kvCompared {
		s += ", KV " + r.KVType
	}
	return s
}

// plotContext draws the context benchmark as a PNG: device memory (peak,
// and the KV cache's part) on the left, prefill and decode speed on the
// right, both against the context length on a log axis, one colour per
// offload mode. It needs no plotting library: lines, dots and a 5×7 font.
func plotContext(w io.Writer, rs []contextResult) error {
	var ok []contextResult
	for _, r := range rs {
		if r.Err == "" {
			ok = append(ok, r)
		}
	}
	if len(ok) == 0 {
		return fmt.Errorf("plot: no successful runs to draw")
	}
	cv := newCanvas(1400, 560)
	modes := []string{}
	seen := map[string]bool{}
	for _, r := range ok {
		if !seen[r.series()] {
			seen[r.series()] = true
			modes = append(modes, r.series())
		}
	}
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	mem := panel{title: "DEVICE MEMORY (MIB): PEAK SOLID, KV DASHED", x0: 90, y0: 60, w: 560, h: 400}
	speed := panel{title: "TOKENS/S (LOG): PREFILL SOLID, DECODE DASHED", x0: 790, y0: 60, w: 560, h: 400, logY: true}
	var series []plotSeries
	for i, m := range modes {
		col := plotColors[i%len(plotColors)]
		var peak, kvp, pre, dec plotSeries
		peak = plotSeries{panel: &mem, col: col}
		kvp = plotSeries{panel: &mem, col: col, dashed: true}
		pre = plotSeries{panel: &speed, col: col}
		dec = plotSeries{panel: &speed, col: col, dashed: true}
		for _, r := range ok {
			if r.series() != m {
				continue
			}
			x := float64(r.Ctx)
			peak.pts = append(peak.pts, [2]float64{x, mib(r.DevicePeak)})
			kvp.pts = append(kvp.pts, [2]float64{x, mib(r.DeviceKVPeak)})
			if v := r.prefillRate(); v > 0 {
				pre.pts = append(pre.pts, [2]float64{x, v})
			}
			if v := r.decodeRate(); v > 0 {
				dec.pts = append(dec.pts, [2]float64{x, v})
			}
		}
		series = append(series, peak, kvp, pre, dec)
	}
	var ctxs []int
	for _, r := range ok {
		ctxs = append(ctxs, r.Ctx)
	}
	for _, p := range []*panel{&mem, &speed} {
		p.fit(series)
		p.draw(cv, ctxs, "CONTEXT")
	}
	for _, s := range series {
		s.draw(cv)
	}
	for i, m := range modes {
		x := 90 + 330*i
		col := plotColors[i%len(plotColors)]
		cv.rect(x, 520, x+30, 524, col)
		cv.text(x+40, 515, m, 2, black)
	}
	return png.Encode(w, cv.img)
}

var (
	black      = color.RGBA{0, 0, 0, 255}
	grey       = color.RGBA{215, 215, 215, 255}
	plotColors = []color.RGBA{{31, 90, 200, 255}, {210, 50, 40, 255}, {40, 150, 60, 255}}
)

// panel is one plot area with its axes' ranges.
type panel struct {
	title        string
	x0, y0, w, h int // pixels
	xmin, xmax   float64
	ymin, ymax   float64
	logY         bool
}

type plotSeries struct {
	panel  *panel
	col    color.RGBA
	dashed bool
	pts    [][2]float64
}

// fit sets the ranges to hold every point of the panel's series: x is
// log2 of the context, y starts at 0 (linear) or spans whole decades (log).
func (p *panel) fit(ss []plotSeries) {
	p.xmin, p.xmax, p.ymin, p.ymax = math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		if s.panel != p {
			continue
		}
		for _, q := range s.pts {
			p.xmin, p.xmax = min(p.xmin, q[0]), max(p.xmax, q[0])
			p.ymin, p.ymax = min(p.ymin, q[1]), max(p.ymax, q[1])
		}
	}
	if math.IsInf(p.xmin, 0) {
		p.xmin, p.xmax, p.ymin, p.ymax = 1, 2, 1, 10
	}
	if p.xmax <= p.xmin {
		p.xmin, p.xmax = p.xmin/2, p.xmax*2
	}
	if p.logY {
		p.ymin = math.Pow(10, math.Floor(math.Log10(p.ymin)))
		p.ymax = math.Pow(10, math.Ceil(math.Log10(p.ymax)))
		if p.ymax <= p.ymin {
			p.ymax = p.ymin * 10
		}
	} else {
		p.ymin, p.ymax = 0, niceCeil(p.ymax*1.05)
	}
}

// at maps a data point to pixels.
func (p *panel) at(x, y float64) (int, int) {
	fx := (math.Log2(x) - math.Log2(p.xmin)) / (math.Log2(p.xmax) - math.Log2(p.xmin))
	var fy float64
	if p.logY {
		fy = (math.Log10(y) - math.Log10(p.ymin)) / (math.Log10(p.ymax) - math.Log10(p.ymin))
	} else {
		fy = (y - p.ymin) / (p.ymax - p.ymin)
	}
	return p.x0 + int(fx*float64(p.w)), p.y0 + p.h - int(fy*float64(p.h))
}

// draw draws the frame, grid, ticks at xs, the x axis' name and the
// title.
func (p *panel) draw(cv *canvas, xs []int, xName string) {
	done := map[int]bool{}
	for _, v := range xs {
		if done[v] {
			continue
		}
		done[v] = true
		x, _ := p.at(float64(v), p.ymin)
		cv.rect(x, p.y0, x, p.y0+p.h, grey)
		label := countLabel(v)
		cv.text(x-len(label)*6, p.y0+p.h+10, label, 2, black)
	}
	var ticks []float64
	if p.logY {
		for v := p.ymin; v <= p.ymax*1.001; v *= 10 {
			ticks = append(ticks, v)
		}
	} else {
		for i := 0; i <= 4; i++ {
			ticks = append(ticks, p.ymin+(p.ymax-p.ymin)*float64(i)/4)
		}
	}
	for _, v := range ticks {
		_, y := p.at(p.xmin, v)
		cv.rect(p.x0, y, p.x0+p.w, y, grey)
		label := strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
		cv.text(p.x0-10-len(label)*12, y-7, label, 2, black)
	}
	cv.rect(p.x0, p.y0, p.x0, p.y0+p.h, black)
	cv.rect(p.x0, p.y0+p.h, p.x0+p.w, p.y0+p.h, black)
	cv.text(p.x0, p.y0-35, p.title, 2, black)
	cv.text(p.x0+p.w/2-len(xName)*6, p.y0+p.h+32, xName, 2, black)
}

func (s plotSeries) draw(cv *canvas) {
	for i, q := range s.pts {
		x, y := s.panel.at(q[0], q[1])
		cv.rect(x-3, y-3, x+3, y+3, s.col)
		if i > 0 {
			px, py := s.panel.at(s.pts[i-1][0], s.pts[i-1][1])
			cv.line(px, py, x, y, s.col, s.dashed)
		}
	}
}

// countLabel writes 4096 as 4K and 1048576 as 1M.
func countLabel(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprint(n)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

// canvas is an RGBA image with a few drawing primitives.
type canvas struct{ img *image.RGBA }

func newCanvas(w, h int) *canvas {
	cv := &canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	cv.rect(0, 0, w-1, h-1, color.RGBA{255, 255, 255, 255})
	return cv
}

// rect fills the rectangle with corners (x0, y0) and (x1, y1), inclusive.
func (cv *canvas) rect(x0, y0, x1, y1 int, c color.RGBA) {
	for y := min(y0, y1); y <= max(y0, y1); y++ {
		for x := min(x0, x1); x <= max(x0, x1); x++ {
			cv.img.SetRGBA(x, y, c)
		}
	}
}

// line draws a 2-pixel line, dashed every 8 pixels when asked.
func (cv *canvas) line(x0, y0, x1, y1 int, c color.RGBA, dashed bool) {
	n := max(abs(x1-x0), abs(y1-y0), 1)
	for i := 0; i <= n; i++ {
		if dashed && (i/8)%2 == 1 {
			continue
		}
		x := x0 + (x1-x0)*i/n
		y := y0 + (y1-y0)*i/n
		cv.rect(x, y, x+1, y+1, c)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// text draws s (upper-cased) from (x, y), top left, with the 5×7 font
// magnified scale times; unknown characters are left blank.
func (cv *canvas) text(x, y int, s string, scale int, c color.RGBA) {
	for _, ch := range strings.ToUpper(s) {
		g := font5x7[ch]
		for row := 0; row < 7; row++ {
			for col := 0; col < 5; col++ {
				if g>>(34-(row*5+col))&1 == 1 {
					px, py := x+col*scale, y+row*scale
					cv.rect(px, py, px+scale-1, py+scale-1, c)
				}
			}
		}
		x += 6 * scale
	}
}

// font5x7 holds each glyph's 7 rows of 5 pixels, top row in the highest
// bits, leftmost pixel first.
var font5x7 = map[rune]uint64{
	'%': 0x632222263,
	'(': 0x088842082,
	')': 0x208210888,
	'+': 0x0084f9080,
	',': 0x000003088,
	'-': 0x0000f8000,
	'.': 0x00000018c,
	'/': 0x002222200,
	'0': 0x3a33ae62e,
	'1': 0x11842108e,
	'2': 0x3a211111f,
	'3': 0x7c441062e,
	'4': 0x08ca97c42,
	'5': 0x7e1e0862e,
	'6': 0x1910f462e,
	'7': 0x7c2222108,
	'8': 0x3a317462e,
	'9': 0x3a317844c,
	':': 0x018c03180,
	'=': 0x001f07c00,
	'A': 0x3a31fc631,
	'B': 0x7a31f463e,
	'C': 0x3a308422e,
	'D': 0x72518c65c,
	'E': 0x7e10f421f,
	'F': 0x7e10f4210,
	'G': 0x3a30bc62f,
	'H': 0x4631fc631,
	'I': 0x38842108e,
	'J': 0x1c4210a4c,
	'K': 0x4654c5251,
	'L': 0x42108421f,
	'M': 0x4775ac631,
	'N': 0x4639ace31,
	'O': 0x3a318c62e,
	'P': 0x7a31f4210,
	'Q': 0x3a318d64d,
	'R': 0x7a31f5251,
	'S': 0x3e107043e,
	'T': 0x7c8421084,
	'U': 0x46318c62e,
	'V': 0x46318c544,
	'W': 0x4631ad6aa,
	'X': 0x462a22a31,
	'Y': 0x462a21084,
	'Z': 0x7c222221f,
}
