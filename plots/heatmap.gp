# heatmap.gp — neuronlab's heatmap figure: one annotated matrix per panel CSV, panels side by side.
#
# Variables (written by the report into NAME.gp):
#   csvs     space-separated panel CSV files (header: corner,column…; then row name,value…; NaN = no value)
#   titles   a file with the panel titles, one per line, same order
#   out      output path without extension (writes out.png and out.pdf)
#   xlabel   label under the columns; ylabel: label of the colour box
#   cells    space-separated annotation files, one per panel: col,row,value,text (0-based; the
#            report formats the text: the value in the figure's printf format, "±spread" when the
#            panel has a spread, "–" for a cell without a value)
#   symlog   > 0: the colours follow asinh(v / symlog), linear within ±symlog and logarithmic
#            beyond, so one large cell does not wash out the rest (the colour box is labelled in
#            the values' own units); 0: a linear colour scale
#   cbmin, cbmax  smallest and largest value over all cells of all panels: one colour scale
#            for the figure — diverging (blue, white at 0, red) and symmetric about 0 when the
#            values have both signs, else sequential from 0 (light) to the largest |value| (dark)
#   rowchars, colchars, annotchars  characters of the longest row name, column name, annotation
#   prows, pcols, tchars  arrays, per panel: rows, columns, characters of the title
# The first CSV row is drawn at the top, column names are the x tics (rotated by 45° when they
# do not fit under a cell), row names the y tics; one horizontal colour box under the panels.
# Each cell is annotated with its text from `cells`, dark text on light cells and
# white on dark ones; cells without a value are grey with a dash. A figure whose widest panel has
# more than 32 columns (64 experts) is coloured only, with narrow cells: no number fits there. Cells are drawn as boxes
# rather than `with image`, which needs at least 2 x 2 cells. The layout is computed in PNG
# pixels (9 px per character, 17 px per line at 11 pt); the PDF keeps the same proportions.
# Odd data: names are drawn without enhanced-text markup (a label "x_y" stays "x_y"), a row
# name starting with '#' is data, not a comment; arithmetic is in floats (cbmin = cbmax = 0
# written as integers would divide as integers) and logarithms are guarded, so all-zero,
# constant and one-cell matrices draw.
set datafile separator ','
set datafile commentschars ""
n = words(csvs)
mx(a, b) = a > b ? a : b
perrow = (n <= 3) ? n : (n == 4 ? 2 : 3)
nrowsl = int(ceil(n * 1.0 / perrow))

# ---- colour scale ----------------------------------------------------------------------------
cbmin = real(cbmin); cbmax = real(cbmax)
div = (cbmin < 0 && cbmax > 0)
if (div) {
  m = mx(-cbmin, cbmax); lo = -m; hi = m
} else {
  if (cbmax <= 0 && cbmin < 0) { lo = cbmin; hi = 0 } else { lo = 0; hi = cbmax }
}
if (!(hi > lo)) { hi = lo + 1.0 }   # one value (all zeros, a constant): a unit range
neg = (!div && hi <= 0)
if (!exists("symlog")) symlog = 0.0
S(v) = symlog > 0 ? asinh(v / symlog) : v     # the colour coordinate
tpos(v) = (S(v) - S(lo)) / (S(hi) - S(lo))
# white text where the colour is dark: the ends of the diverging scale, the dark end of the sequential one
darkcell(v) = div ? abs(tpos(v) - 0.5) > 0.3 : (neg ? tpos(v) < 0.42 : tpos(v) > 0.58)
textcolor(v) = (v != v) ? 0x555555 : (darkcell(v) ? 0xFFFFFF : 0x1A1A1A)

# ---- layout (PNG pixels) ---------------------------------------------------------------------
hc = 9.0; vc = 17.0
maxc = 1
do for [p = 1:n] { maxc = mx(maxc, pcols[p]) }
annot = (maxc <= 32)                             # wider panels (64 experts) are coloured only: no number would fit
cw = annot ? mx(46, (annotchars + 2) * 8.0) : 18.0   # cell width: the annotation at 10 pt with room
do for [p = 1:n] { cw = mx(cw, (tchars[p] * hc + 8) / pcols[p]) }   # a title never overhangs its panel
rot = (colchars * hc + 8 > cw)                   # column names that do not fit are rotated by 45°
maxr = 1
do for [p = 1:n] { maxr = mx(maxr, prows[p]) }
ch = annot ? mx(28, 120.0 / maxr) : mx(18, 120.0 / maxr)   # cell height; small matrices get taller cells
lm = mx(rowchars * hc + 16, rot ? colchars * hc * 0.71 - cw / 2 + 14 : 0)
bm = 10 + (rot ? colchars * hc * 0.71 + vc * 0.71 : vc) + (xlabel ne "" ? vc + 10 : 0) + 8
tm = vc + 18
gap = 18
slot = tm + maxr * ch + bm                       # height of one row of panels
array px0[n]; array py1[n]                       # left and top of each plot area
W = 0
do for [r = 0:nrowsl - 1] {
  x = 0
  plast = (r + 1) * perrow < n ? (r + 1) * perrow : n
  do for [p = r * perrow + 1:plast] {
    px0[p] = x + lm; py1[p] = r * slot + tm
    x = x + lm + pcols[p] * cw + gap
  }
  W = mx(W, x)
}
# one horizontal colour box for the figure, centred under the panels, its label below it
cbw = mx(280, strlen(ylabel) * hc + 40)
W = 1.0 * mx(mx(400, W + 10), cbw + 60)
cbband = 8 + 14 + 6 + vc + (ylabel ne "" ? vc + 8 : 0) + 12
H = 1.0 * mx(300, nrowsl * slot + cbband)
cby = nrowsl * slot + 8                          # top of the colour box
# colour-box tics: a 1-2-5 step with room for every label (the widest label decides)
nice(x) = (x > 0 && x < 1e300) ? (ne = 10.0 ** floor(log10(x)), nf = x / ne, (nf <= 1 ? 1 : (nf <= 2 ? 2 : (nf <= 5 ? 5 : 10))) * ne) : 1.0
symlab(v) = abs(v) >= 1e4 ? sprintf("%s10^{%d}", v < 0 ? "-" : "", int(floor(log10(abs(v)) + 0.5))) : sprintf("%g", v)
cbstep = nice((hi - lo) / mx(2, floor(cbw / (8 * 8.0))))
cbchars = mx(strlen(sprintf("%g", ceil(lo / cbstep) * cbstep)), strlen(sprintf("%g", floor(hi / cbstep) * cbstep)))
cbchars = mx(cbchars, strlen(sprintf("%g", cbstep)))
cbstep = nice((hi - lo) / mx(2, floor(cbw / ((cbchars + 2) * 8.0))))   # 8 px per character at 10 pt

do for [pass = 1:2] {
  if (pass == 1) {
    set terminal pngcairo enhanced font "DejaVu Sans,11" size int(W), int(H) linewidth 1.5
    set output out.".png"
  } else {   # same proportions as the PNG: 124 px per inch, text scaled with the page
    set terminal pdfcairo enhanced font "DejaVu Sans,10" fontscale 0.6 size W / 124.0, H / 124.0 linewidth 1.5
    set output out.".pdf"
  }
  set multiplot
  unset key
  set palette maxcolors 0
  if (div) {   # ColorBrewer RdBu (colour-blind safe), white at 0
    set palette defined (0 "#2166AC", 1 "#4393C3", 2 "#92C5DE", 3 "#D1E5F0", 4 "#F7F7F7", 5 "#FDDBC7", 6 "#F4A582", 7 "#D6604D", 8 "#B2182B")
  } else {     # ColorBrewer YlGnBu (colour-blind safe), light at 0
    if (neg) {
      set palette defined (0 "#081D58", 1 "#253494", 2 "#225EA8", 3 "#1D91C0", 4 "#41B6C4", 5 "#7FCDBB", 6 "#C7E9B4", 7 "#EDF8B1", 8 "#FFFFD9")
    } else {
      set palette defined (0 "#FFFFD9", 1 "#EDF8B1", 2 "#C7E9B4", 3 "#7FCDBB", 4 "#41B6C4", 5 "#1D91C0", 6 "#225EA8", 7 "#253494", 8 "#081D58")
    }
  }
  set cbrange [lo:hi]
  set format cb "% h"
  if (symlog > 0) {   # ticks at 0 and ±symlog·10^k: a 1-10-100 scale (1-2-5 within one decade)
    set nonlinear cb via asinh(z / symlog) inverse symlog * sinh(z)
    set cbtics ("0" 0) scale 0.5 font ",10" offset 0, 0.2
    kmax = int(floor(log10(mx(abs(lo), abs(hi)) / symlog)))
    do for [k = 0:kmax] {
      v = symlog * 10.0 ** k
      if (v <= hi) { set cbtics add (symlab(v) v) }
      if (-v >= lo) { set cbtics add (symlab(-v) -v) }
      if (kmax <= 0) {   # within one decade: 2 and 5 too
        do for [m in "2 5"] {
          w = v * real(m)
          if (w <= hi) { set cbtics add (symlab(w) w) }
          if (-w >= lo) { set cbtics add (symlab(-w) -w) }
        }
      }
    }
  } else {
    set cbtics ceil(lo / cbstep) * cbstep, cbstep scale 0.5 font ",10" offset 0, 0.2
  }
  set cblabel ylabel noenhanced
  set border lw 0.6 lc rgb "#444444"
  set tics scale 0 font ",10"
  set xtics out nomirror
  if (rot) { set xtics rotate by 45 right offset 0.5, 0 } else { set xtics norotate center }
  set xtics noenhanced
  set ytics nomirror noenhanced
  set xlabel xlabel noenhanced
  unset ylabel
  set object 1 rectangle from graph 0, 0 to graph 1, 1 behind fillcolor rgb "#D9D9D9" fillstyle solid 1.0 noborder
  do for [p = 1:n] {
    f = word(csvs, p)
    cf = word(cells, p)
    set title system(sprintf("sed -n '%dp' '%s'", p, titles)) noenhanced
    set lmargin at screen px0[p] / W
    set rmargin at screen (px0[p] + pcols[p] * cw) / W
    set tmargin at screen 1 - py1[p] / H
    set bmargin at screen 1 - (py1[p] + prows[p] * ch) / H
    set xrange [-0.5:pcols[p] - 0.5]
    set yrange [prows[p] - 0.5:-0.5]
    unset arrow
    do for [i = 1:pcols[p] - 1] { set arrow from i - 0.5, graph 0 to i - 0.5, graph 1 nohead front lc rgb "white" lw 1 }
    do for [i = 1:prows[p] - 1] { set arrow from graph 0, first i - 0.5 to graph 1, first i - 0.5 nohead front lc rgb "white" lw 1 }
    if (p == n) {
      set colorbox horizontal user origin screen (W - cbw) / 2 / W, screen 1 - (cby + 14) / H size screen cbw / W, screen 14 / H
      set colorbox border
    } else {
      unset colorbox
    }
    # cells as boxes, not `with image`: an image needs at least 2 x 2 cells
    if (annot) {
      plot f matrix rowheaders columnheaders using 1:2:($3 == $3 ? 0.5 : 0):($3 == $3 ? 0.5 : 0):3 with boxxyerror fc palette fs solid 1.0 noborder, \
           cf using 1:2:4:(textcolor($3)) with labels tc rgb variable font ",10" noenhanced
    } else {
      plot f matrix rowheaders columnheaders using 1:2:($3 == $3 ? 0.5 : 0):($3 == $3 ? 0.5 : 0):3 with boxxyerror fc palette fs solid 1.0 noborder
    }
  }
  unset multiplot
  set output
}
