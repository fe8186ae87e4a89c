# lines.gp — neuronlab's line figure: one panel per CSV, one curve per column after the first.
#
# Variables (gnuplot -e): csvs   space-separated panel CSV files (header: x,series…)
#                         titles a file with the panel titles, one per line, same order
#                         out    output path without extension (writes out.png and out.pdf)
#                         xlabel, ylabel, logx (0/1), logy (0/1), style ("lines", "linespoints", "histeps")
#                         xmin, xmax ("" = automatic), key ("" = default placement)
# Paper style: sans-serif 11 pt, labelled axes, a legend per panel, light grid, a colour-blind
# safe palette (Okabe–Ito), PNG at 150 dpi equivalent and vector PDF.
# Odd data: titles and legend entries are drawn without enhanced-text markup; a panel with a
# single x value draws its points even in the "lines" style (a line needs two).
set datafile separator ','
set datafile commentschars ""
set datafile missing 'NaN'
n = words(csvs)
cols = (n <= 1) ? 1 : (n <= 4 ? 2 : (n <= 9 ? 3 : 4))
rows = int(ceil(n * 1.0 / cols))
if (!exists("style")) style = "lines"
if (!exists("key") || key eq "") key = (style eq "histeps") ? "top right" : "top left"
if (!exists("xmin")) xmin = ""
if (!exists("xmax")) xmax = ""
array palette[8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

do for [pass = 1:2] {
  if (pass == 1) {
    set terminal pngcairo enhanced font "DejaVu Sans,11" size 520*cols, 380*rows linewidth 1.5
    set output out.".png"
  } else {
    set terminal pdfcairo enhanced font "DejaVu Sans,10" size 4.2*cols, 3.0*rows linewidth 1.5
    set output out.".pdf"
  }
  set multiplot layout rows, cols
  do for [p = 1:n] {
    f = word(csvs, p)
    set title system(sprintf("sed -n '%dp' '%s'", p, titles)) noenhanced
    set xlabel xlabel noenhanced
    set ylabel ylabel noenhanced
    if (logx) { set logscale x; set format x "10^{%L}" } else { unset logscale x; set format x "% h" }
    if (logy) { set logscale y; set format y "10^{%L}" } else { unset logscale y; set format y "% h" }
    if (xmin ne "" && xmax ne "") { set xrange [real(xmin):real(xmax)] } else { set autoscale x }
    set autoscale y
    set grid lc rgb "#dddddd"
    set border lc rgb "#444444"
    set key @key noenhanced Left reverse box lc rgb "#bbbbbb" samplen 2 spacing 1.1 font ",9"
    ncol = int(system(sprintf("head -1 '%s' | awk -F, '{print NF}'", f)))
    nx = int(system(sprintf("tail -n +2 '%s' | wc -l", f)))
    pstyle = (style eq "lines" && nx < 2) ? "linespoints" : style
    if (xlabel eq "layer") {   # integer ticks, at most about 12 of them
      xmaxv = real(system(sprintf("tail -n +2 '%s' | cut -d, -f1 | sort -g | tail -1", f)))
      set xtics 0, (xmaxv > 12 ? ceil(xmaxv / 12.0) : 1)
      set format x "%.0f"
    } else {
      set xtics autofreq
    }
    if (pstyle eq "histeps") {
      plot for [c = 2:ncol] f using 1:c with histeps lw 1.5 lc rgb palette[(c - 2) % 8 + 1] title columnhead(c)
    } else {
      if (pstyle eq "linespoints") {
        plot for [c = 2:ncol] f using 1:c with linespoints lw 1.5 pt 7 ps 0.6 lc rgb palette[(c - 2) % 8 + 1] title columnhead(c)
      } else {
        plot for [c = 2:ncol] f using 1:c with lines lw 1.5 lc rgb palette[(c - 2) % 8 + 1] title columnhead(c)
      }
    }
  }
  unset multiplot
  set output
}
