// loopml web UI charts: every <div class="chart" data-spec="ID"> is drawn by uPlot from the JSON in
// <script type="application/json" id="ID">. Spec: {title, kind: "time"|"xy"|"bars", x: [...],
// labels: [...] (bars), series: [{label, values, dash}], hline, ylabel}.
(function () {
  "use strict";
  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  window.loopmlCharts = [];
  function draw(el) {
    var spec = JSON.parse(document.getElementById(el.getAttribute("data-spec")).textContent);
    var width = parseInt(el.getAttribute("data-width") || "460", 10);
    var bars = spec.kind === "bars";
    var series = [{}];
    var data = [spec.x];
    spec.series.forEach(function (s, i) {
      var conf = {label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.6, spanGaps: true,
                  points: {show: spec.x.length < 40, size: 5}};
      if (s.dash) conf.dash = [6, 4];
      if (bars) {
        conf.fill = PALETTE[i % PALETTE.length] + "99";
        conf.paths = uPlot.paths.bars({size: [0.4, 60], align: i === 0 ? -1 : 1});
        conf.points = {show: false};
      }
      series.push(conf);
      data.push(s.values);
    });
    if (spec.hline !== undefined && spec.hline !== null) {
      series.push({label: "threshold", stroke: "#888", dash: [4, 3], width: 1, points: {show: false}});
      data.push(spec.x.map(function () { return spec.hline; }));
    }
    var axes = [{}, {label: spec.ylabel || ""}];
    if (bars) {
      axes[0] = {values: function (u, vals) { return vals.map(function (v) {
        return Number.isInteger(v) && spec.labels[v] !== undefined ? spec.labels[v] : ""; }); },
        rotate: spec.labels.length > 6 ? -30 : 0, size: spec.labels.length > 6 ? 60 : 30};
    }
    var opts = {title: spec.title, width: width, height: 220, series: series, axes: axes,
                scales: {x: {time: spec.kind === "time"}}, legend: {live: false}};
    if (!bars && spec.x.length === 1) {  // one window: centre it instead of letting the axis run for years
      var half = spec.kind === "time" ? 43200 : 0.5;
      opts.scales.x.range = function () { return [spec.x[0] - half, spec.x[0] + half]; };
    }
    if (bars) opts.scales.x.range = function () { return [-0.6, spec.labels.length - 0.4]; };
    var plot = new uPlot(opts, data, el);
    window.loopmlCharts.push({id: el.getAttribute("data-spec"), kind: spec.kind, title: spec.title,
                              data: data, plot: plot});
  }
  document.querySelectorAll(".chart[data-spec]").forEach(draw);
})();
