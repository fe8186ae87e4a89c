# lines.gp — neuronlab's line figure: one panel per CSV, one curve per column after the first.
#
# Variables (written by the report into NAME.gp):
#   csvs     space-separated panel CSV files (header: x,series…)
#   titles   a file with the panel titles, one per line, same order
#   out      output path without extension (writes out.png and out.pdf)
#   xlabel, ylabel, logx (0/1), logy (0/1), style ("lines", "linespoints", "histeps", "points": a
#            scatter, one marker per row; the PCA of expert usage)
#   symlog   > 0: symmetric logarithmic y axis, asinh(y / symlog) (linear within ±symlog)
#   ymin, ymax     the smallest and largest finite value of all panels: one y range for the figure
#   yfloor, yceil  (optional) a y range the axis always covers (a score axis covers 0..1)
#   key      gnuplot key placement ("" = default); sharedkey = 1: one legend for all panels
#   snames   array: the figure's series names; sidx, soff: which series each panel's columns are
#            (column c of panel p is series sidx[soff[p] + c - 1]), so a series has one style
#            in every panel and in the shared legend
# Paper style: sans-serif 11 pt, labelled axes, light grid, a colour-blind safe palette
# (Okabe–Ito without black, which is kept for the aggregates "all layers" and "all tokens"), a marker and a dash
# pattern per series (curves that overlap stay apart: filled against open markers, solid
# against dashed), PNG at 150 dpi equivalent and vector PDF. The y range is shared by the panels
# with 5 % headroom at both ends (a histogram stands on 0), so a curve at the edge (a score of
# 1.0, a CDF at 0) is not hidden under the border;
# x is fitted to the data drawn. "random baseline" is drawn as a grey dashed line (chance level),
# and so is "dense model" (the reference an MoE sweep is measured against).
# Odd data: titles and legend entries are drawn without enhanced-text markup; a panel with a
# single x value draws its points even in the "lines" style (a line needs two); constant data
# gets a unit-wide range.
set datafile separator ','
set datafile commentschars ""
set datafile missing 'NaN'
n = words(csvs)
cols = (n <= 1) ? 1 : (n <= 4 ? 2 : (n <= 9 ? 3 : 4))
rows = int(ceil(n * 1.0 / cols))
if (!exists("style")) style = "lines"
if (!exists("key") || key eq "") key = (style eq "histeps") ? "top right" : "top left"
if (!exists("sharedkey")) sharedkey = 0
if (!exists("symlog")) symlog = 0.0
mx(a, b) = a > b ? a : b
mn(a, b) = a < b ? a : b

# ---- series styles -----------------------------------------------------------------------------
array palette[7] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C6D1F"]
array ptypes[8] = [7, 4, 9, 6, 5, 8, 13, 10]      # filled circle, open square, filled triangle, open circle, …
array dtypes[4] = [1, 2, 4, 5]                     # solid, dashed, dot-dash, dot-dot-dash
isagg(g) = snames[g] eq "all layers" || snames[g] eq "all tokens"
isbase(g) = snames[g] eq "random baseline" || snames[g] eq "dense model"
scol(g) = isagg(g) ? "#000000" : (isbase(g) ? "#777777" : palette[(g - 1) % 7 + 1])
spt(g) = ptypes[(g - 1) % 8 + 1]
sps(g) = isbase(g) ? 0.01 : 0.7
slw(g) = isagg(g) ? 2.6 : 1.6
# dashes: per series with markers; with plain lines only once the colours repeat
sdt(g) = isbase(g) ? 2 : (isagg(g) ? 1 : (style eq "linespoints" ? dtypes[(g - 1) % 4 + 1] : int((g - 1) / 7) % 4 + 1))

# ---- one y range for all panels ----------------------------------------------------------------
ylo = real(ymin); yhi = real(ymax)
if (exists("yfloor") && !(logy && yfloor <= 0)) { ylo = mn(ylo, real(yfloor)); yhi = mx(yhi, real(yceil)) }
T(y) = asinh(y / symlog)
Ti(t) = symlog * sinh(t)
if (symlog > 0) {
  tlo = T(ylo); thi = T(yhi)
  if (!(thi > tlo)) { tlo = tlo - 1; thi = thi + 1 }
  pad = 0.05 * (thi - tlo); ylo = (ylo == 0 ? 0 : Ti(tlo - pad)); yhi = Ti(thi + pad)
} else {
  if (logy) {
    if (!(yhi > ylo)) { ylo = ylo / 2; yhi = yhi * 2 }
    f = (yhi / ylo) ** 0.05; ylo = ylo / f; yhi = yhi * f
  } else {
    if (!(yhi > ylo)) { d = (ylo != 0) ? abs(ylo) * 0.1 : 0.5; ylo = ylo - d; yhi = yhi + d }
    pad = 0.05 * (yhi - ylo); yhi = yhi + pad; if (ylo != 0 || style ne "histeps") { ylo = ylo - pad }   # a histogram stands on 0
  }
}
# symmetric-log ticks: 0 and ±10^k within the range (every other decade when there are many)
symlab(v) = abs(v) >= 1e4 ? sprintf("%s10^{%d}", v < 0 ? "-" : "", int(floor(log10(abs(v)) + 0.5))) : sprintf("%g", v)

# ---- layout: panels on a grid, the shared legend in a free slot or in a band above -------------
PW = 520.0; PH = 380.0
spare = rows * cols - n
nser = exists("snames") ? |snames| : 0
perline = int(mx(1, floor(cols * PW / 230)))
band = (sharedkey && spare == 0) ? 26.0 * ceil(nser * 1.0 / perline) + 16 : 0
W = cols * PW; H = rows * PH + band

do for [pass = 1:2] {
  if (pass == 1) {
    set terminal pngcairo enhanced font "DejaVu Sans,11" size int(W), int(H) linewidth 1.5
    set output out.".png"
  } else {
    set terminal pdfcairo enhanced font "DejaVu Sans,10" size W / PW * 4.2, H / PH * 3.0 linewidth 1.5
    set output out.".pdf"
  }
  set multiplot
  do for [p = 1:n] {
    f = word(csvs, p)
    set origin ((p - 1) % cols) * PW / W, (rows - 1 - int((p - 1) / cols)) * PH / H
    set size PW / W, PH / H
    set title system(sprintf("sed -n '%dp' '%s'", p, titles)) noenhanced
    set xlabel xlabel noenhanced
    set ylabel ylabel noenhanced
    if (logx) { set logscale x; set format x "10^{%L}" } else { unset logscale x; set format x "% h" }
    unset logscale y; unset nonlinear y
    set ytics autofreq; set format y "% h"
    if (logy) { set logscale y; set format y "10^{%L}" }
    if (logy && yhi / ylo < 300) {   # under ~2 decades: plain numbers, with 2 and 5 between the decades
      set format y "%g"
      do for [k = int(floor(log10(ylo))):int(ceil(log10(yhi)))] {
        do for [m in "2 5"] { v = real(m) * 10.0 ** k; if (v >= ylo && v <= yhi) { set ytics add (sprintf("%g", v) v) } }
      }
    }
    if (symlog > 0) {
      set nonlinear y via asinh(y / symlog) inverse symlog * sinh(y)
      set ytics ("0" 0)
      kmin = int(ceil(log10(symlog) - 1e-9)); kmax = int(floor(log10(mx(abs(ylo), abs(yhi)))))
      kstep = (kmax - kmin > 7) ? 2 : 1
      do for [k = kmin:kmax:kstep] {
        v = 10.0 ** k
        if (v <= yhi) { set ytics add (symlab(v) v) }
        if (-v >= ylo) { set ytics add (symlab(-v) -v) }
      }
    }
    set yrange [ylo:yhi]
    set autoscale x
    set grid lc rgb "#dddddd"
    set border lc rgb "#444444"
    if (sharedkey) { unset key } else { set key @key noenhanced Left reverse box lc rgb "#bbbbbb" samplen 3 spacing 1.1 font ",9" }
    ncol = int(system(sprintf("head -1 '%s' | awk -F, '{print NF}'", f)))
    nx = int(system(sprintf("tail -n +2 '%s' | wc -l", f)))
    pstyle = (style eq "lines" && nx < 2) ? "linespoints" : style
    if (xlabel eq "layer") {   # integer ticks, at most about 12 of them
      xmaxv = real(system(sprintf("tail -n +2 '%s' | cut -d, -f1 | sort -g | tail -1", f)))
      set xtics 0, (xmaxv > 12 ? ceil(xmaxv / 12.0) : 1)
      set format x "%.0f"
      xminv = real(system(sprintf("tail -n +2 '%s' | cut -d, -f1 | sort -g | head -1", f)))
      set xrange [xminv - 0.4:xmaxv + 0.4]   # the first and last layer's markers clear of the border
    } else {
      set xtics autofreq
    }
    o = soff[p]
    if (pstyle eq "points") {
      plot for [c = 2:ncol] f using 1:c with points pt spt(sidx[o + c - 1]) ps 0.9 lc rgb scol(sidx[o + c - 1]) title columnhead(c)
    } else {
    if (pstyle eq "histeps") {
      plot for [c = 2:ncol] f using 1:c with histeps lw slw(sidx[o + c - 1]) dt sdt(sidx[o + c - 1]) \
           lc rgb scol(sidx[o + c - 1]) title columnhead(c)
    } else {
      if (pstyle eq "linespoints") {
        plot for [c = 2:ncol] f using 1:c with linespoints lw slw(sidx[o + c - 1]) dt sdt(sidx[o + c - 1]) \
             pt spt(sidx[o + c - 1]) ps sps(sidx[o + c - 1]) lc rgb scol(sidx[o + c - 1]) title columnhead(c)
      } else {
        plot for [c = 2:ncol] f using 1:c with lines lw slw(sidx[o + c - 1]) dt sdt(sidx[o + c - 1]) \
             lc rgb scol(sidx[o + c - 1]) title columnhead(c)
      }
    }
    }
  }
  if (sharedkey && nser > 0) {   # the legend alone: an empty plot whose key holds every series
    unset title; unset xlabel; unset ylabel; unset border; unset tics; unset grid; unset logscale; unset nonlinear y
    set xrange [0:1]; set yrange [0:1]
    if (spare > 0) {   # centred in the free slots of the last row
      set origin (cols - spare) * PW / W, 0
      set size spare * PW / W, PH / H
      set key at graph 0.5, graph 0.5 center center vertical noenhanced Left reverse box lc rgb "#bbbbbb" samplen 4 spacing 1.3 font ",11"
    } else {       # a band above the panels
      set origin 0, rows * PH / H
      set size 1, band / H
      set key at graph 0.5, graph 0.5 center center horizontal maxcols perline noenhanced Left reverse box lc rgb "#bbbbbb" samplen 4 spacing 1.2 font ",11"
    }
    if (style eq "points") {
      plot NaN notitle, for [g = 1:nser] keyentry with points pt spt(g) ps 1.1 lc rgb scol(g) title snames[g]
    } else {
    if (style eq "linespoints") {
      plot NaN notitle, for [g = 1:nser] keyentry with linespoints lw slw(g) dt sdt(g) pt spt(g) ps sps(g) lc rgb scol(g) title snames[g]
    } else {
      plot NaN notitle, for [g = 1:nser] keyentry with lines lw slw(g) dt sdt(g) lc rgb scol(g) title snames[g]
    }
    }
  }
  unset multiplot
  set output
}
