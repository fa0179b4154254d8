// loopml charts (the web UI and the exported reports): every <div class="chart" data-spec="ID"> is drawn by
// uPlot from the JSON in <script type="application/json" id="ID">. Spec: {title, kind: "time"|"xy"|"bars",
// x: [...], labels: [...] (bars), series: [{label, values, dash, lower, upper}], hline, ylabel, xlabel,
// xrange: [lo, hi], yrange: [lo, hi], diagonal}. A series with lower/upper draws its interval as whiskers.
(function () {
  "use strict";
  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  window.loopmlCharts = [];
  function whiskers(spec) {
    return function (u) {
      var ctx = u.ctx;
      ctx.save();
      ctx.lineWidth = 1.5 * (window.devicePixelRatio || 1);
      spec.series.forEach(function (s, i) {
        if (!s.lower || !s.upper) return;
        ctx.strokeStyle = "#222";
        var shift = spec.kind === "bars" && spec.series.length > 1 ? (i === 0 ? -0.2 : 0.2) : 0;
        for (var j = 0; j < spec.x.length; j++) {
          var lo = s.lower[j], hi = s.upper[j];
          if (lo === null || hi === null || lo === undefined || hi === undefined) continue;
          var x = u.valToPos(spec.x[j] + shift, "x", true);
          var y0 = u.valToPos(lo, "y", true), y1 = u.valToPos(hi, "y", true);
          ctx.beginPath();
          ctx.moveTo(x, y0); ctx.lineTo(x, y1);
          ctx.moveTo(x - 4, y0); ctx.lineTo(x + 4, y0);
          ctx.moveTo(x - 4, y1); ctx.lineTo(x + 4, y1);
          ctx.stroke();
        }
      });
      ctx.restore();
    };
  }
  function draw(el) {
    var spec = JSON.parse(document.getElementById(el.getAttribute("data-spec")).textContent);
    var width = parseInt(el.getAttribute("data-width") || "460", 10);
    var bars = spec.kind === "bars";
    var series = [{label: spec.xlabel || (spec.kind === "time" ? "time" : "x")}];
    var data = [spec.x];
    spec.series.forEach(function (s, i) {
      var conf = {label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.6, spanGaps: true,
                  points: {show: spec.x.length < 40 || !!s.points, size: 5}};
      if (s.dash) conf.dash = [6, 4];
      if (bars) {
        conf.fill = PALETTE[i % PALETTE.length] + "99";
        conf.paths = uPlot.paths.bars({size: [spec.series.length > 1 ? 0.4 : 0.7, 60],
                                       align: spec.series.length > 1 ? (i === 0 ? -1 : 1) : 0});
        conf.points = {show: false};
      }
      series.push(conf);
      data.push(s.values);
    });
    if (spec.hline !== undefined && spec.hline !== null) {
      series.push({label: "threshold", stroke: "#888", dash: [4, 3], width: 1, points: {show: false}});
      data.push(spec.x.map(function () { return spec.hline; }));
    }
    if (spec.diagonal) {
      series.push({label: "y = x", stroke: "#bbb", dash: [4, 3], width: 1, points: {show: false}, spanGaps: true});
      data.push(spec.x.slice());
    }
    var axes = [{label: spec.xlabel || ""}, {label: spec.ylabel || ""}];
    if (bars) {
      axes[0] = {values: function (u, vals) { return vals.map(function (v) {
        return Number.isInteger(v) && spec.labels[v] !== undefined ? spec.labels[v] : ""; }); },
        rotate: spec.labels.length > 6 ? -35 : 0, size: spec.labels.length > 6 ? 110 : 30,
        splits: function () {  // at most about 12 labels: every k-th bin of a long histogram
          var step = Math.ceil(spec.labels.length / 12);
          return spec.x.filter(function (v, i) { return i % step === 0; }); }};
    }
    var opts = {title: spec.title, width: width, height: parseInt(el.getAttribute("data-height") || (bars && spec.labels.length > 6 ? "300" : "220"), 10),
                series: series, axes: axes, scales: {x: {time: spec.kind === "time"}, y: {}}, legend: {live: !bars}};
    if (!bars && spec.x.length === 1) {  // one window: centre it instead of letting the axis run for years
      var half = spec.kind === "time" ? 43200 : 0.5;
      opts.scales.x.range = function () { return [spec.x[0] - half, spec.x[0] + half]; };
    }
    if (spec.xrange) opts.scales.x.range = function () { return spec.xrange; };
    if (spec.yrange) opts.scales.y.range = function () { return spec.yrange; };
    if (bars) opts.scales.x.range = function () { return [-0.6, spec.labels.length - 0.4]; };
    if (spec.series.some(function (s) { return s.lower && s.upper; })) {
      if (!spec.yrange) {  // the y range must hold the intervals, not only the values
        opts.scales.y.range = function (u, min, max) {
          spec.series.forEach(function (s) {
            (s.lower || []).concat(s.upper || []).forEach(function (v) {
              if (v !== null && v !== undefined) { min = Math.min(min, v); max = Math.max(max, v); }
            });
          });
          var pad = (max - min) * 0.05 || 0.01;
          return [min - pad, max + pad];
        };
      }
      opts.hooks = {draw: [whiskers(spec)]};
    }
    var plot = new uPlot(opts, data, el);
    window.loopmlCharts.push({id: el.getAttribute("data-spec"), kind: spec.kind, title: spec.title,
                              data: data, plot: plot});
  }
  document.querySelectorAll(".chart[data-spec]").forEach(draw);
})();
