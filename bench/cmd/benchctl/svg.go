package main

import (
	"fmt"
	"math"
	"strings"
)

var serverColor = map[string]string{
	"pool":  "#1f77b4",
	"poolM": "#17becf",
	"poolS": "#bcbd22",
	"pool1": "#6baed6",
	"poolN": "#9467bd",
	"poolC": "#ff7f0e",
	"nginx": "#2ca02c",
	"node":  "#d62728",
}

// plot draws one panel per handler: for each placement × mode, a bar per
// server at its median per-round ratio to the single process, with a
// min–max whisker, and a dashed line at 1.0.
func (rep *report) plot() string {
	const (
		width   = 860
		panelH  = 215
		top     = 70
		left    = 60
		right   = 20
		plotH   = 170
		gap     = 20
		barW    = 26
		groupGp = 34
	)
	type panel struct {
		handler string
		srvs    []string
		groups  [][2]string
	}
	var panels []panel
	ymax := 1.2
	for _, h := range rep.handlers {
		p := panel{handler: h}
		for _, s := range rep.servers {
			if s != "single" && rep.hasServer(h, s) {
				p.srvs = append(p.srvs, s)
			}
		}
		for _, pl := range rep.placements {
			for _, m := range rep.modes {
				if rep.cells[cellKey{h, pl, m, "single"}] != nil {
					p.groups = append(p.groups, [2]string{pl, m})
				}
			}
		}
		if len(p.srvs) == 0 || len(p.groups) == 0 {
			continue
		}
		for _, g := range p.groups {
			for _, s := range p.srvs {
				if c := rep.cells[cellKey{h, g[0], g[1], s}]; c != nil && len(c.ratio) > 0 {
					_, hi := minMax(c.ratio)
					ymax = math.Max(ymax, hi)
				}
			}
		}
		panels = append(panels, p)
	}
	ymax = math.Ceil(ymax*1.05*4) / 4
	height := top + len(panels)*(panelH+gap) + 10
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	title := "clusterflock: requests/s relative to a single net/http process"
	if rep.meta["quick"] == true {
		title += " — QUICK SMOKE RUN"
	}
	w(`<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", left, esc(title))
	w(`<text x="%d" y="40" fill="#555">bar: median of the per-round ratios, whisker: min–max; %s rounds, wrk -c%s, %s CPUs; poolK vs singleK;</text>`+"\n",
		left, rep.metaStr("rounds"), rep.metaStr("conns"), rep.metaStr("ncpu"))
	w(`<text x="%d" y="56" fill="#555">shared-t1/-t2 = no pinning, wrk with 1/2 threads; pinned = server tree on one CPU, wrk on the other. Dashed line: the single process.</text>`+"\n", left)
	for pi, p := range panels {
		y0 := top + pi*(panelH+gap) + 20
		yOf := func(v float64) float64 { return float64(y0+plotH) - v/ymax*plotH }
		w(`<text x="%d" y="%d" font-weight="bold">%s handler</text>`+"\n", left, y0-6, esc(p.handler))
		// axis and grid
		for t := 0.0; t <= ymax+1e-9; t += 0.25 {
			y := yOf(t)
			col := "#eee"
			if math.Mod(t, 1) == 0 {
				col = "#ccc"
			}
			w(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>`+"\n", left, width-right, y, y, col)
			if math.Mod(t, 0.5) == 0 {
				w(`<text x="%d" y="%.1f" text-anchor="end" fill="#555">%.1f×</text>`+"\n", left-6, y+4, t)
			}
		}
		w(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#000" stroke-dasharray="6,4"/>`+"\n", left, width-right, yOf(1), yOf(1))
		x := float64(left + 20)
		for _, g := range p.groups {
			gx := x
			// bars centred in a slot wide enough for the group's label
			slot := math.Max(float64(len(p.srvs)*(barW+4)), 150)
			x += (slot - float64(len(p.srvs)*(barW+4))) / 2
			for _, s := range p.srvs {
				c := rep.cells[cellKey{p.handler, g[0], g[1], s}]
				if c != nil && len(c.ratio) > 0 {
					m := median(c.ratio)
					lo, hi := minMax(c.ratio)
					col := serverColor[s]
					if col == "" {
						col = "#888"
					}
					w(`<rect x="%.1f" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s %s %s: %.2f [%.2f..%.2f]</title></rect>`+"\n",
						x, yOf(m), barW, yOf(0)-yOf(m), col, esc(s), g[0], g[1], m, lo, hi)
					cx := x + barW/2
					w(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#333"/>`+"\n", cx, cx, yOf(lo), yOf(hi))
					w(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#333"/>`+"\n", cx-5, cx+5, yOf(lo), yOf(lo))
					w(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#333"/>`+"\n", cx-5, cx+5, yOf(hi), yOf(hi))
					w(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%.2f</text>`+"\n", cx, yOf(0)+12, m)
				}
				x += barW + 4
			}
			w(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", gx+slot/2, y0+plotH+28, esc(g[0]+", "+modeName[g[1]]))
			x = gx + slot + groupGp
		}
		// legend
		lx := float64(width - right - 110)
		w(`<rect x="%.1f" y="%d" width="100" height="%d" fill="white" stroke="#ddd"/>`+"\n", lx-6, y0, len(p.srvs)*16+6)
		for i, s := range p.srvs {
			ly := float64(y0 + 4 + i*16)
			w(`<rect x="%.1f" y="%.1f" width="12" height="12" fill="%s"/>`+"\n", lx, ly, serverColor[s])
			w(`<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+16, ly+10, esc(s))
		}
	}
	w("</svg>\n")
	return b.String()
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
