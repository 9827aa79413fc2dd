// nurtured console, funnel page: draws new leads per channel as a bar chart with uPlot
// from the JSON block #channel-data. The table below the chart has every number, so the
// page reads the same without this script.
(function () {
  function draw() {
    var box = document.getElementById("channel-chart");
    var block = document.getElementById("channel-data");
    if (!box || !block || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(block.textContent);
    var names = data.channels;
    if (!names.length) { return; }
    var xs = names.map(function (_, i) { return i; });
    var width = Math.max(240, box.clientWidth);
    var opts = {
      width: width,
      height: 220,
      legend: { show: false },
      cursor: { show: false },
      scales: {
        x: { time: false, range: [-0.5, names.length - 0.5] },
        y: { range: function (u, min, max) { return [0, Math.max(1, max)]; } }
      },
      axes: [
        {
          splits: function () { return xs; },
          values: function (u, vals) { return vals.map(function (v) { return names[v] || ""; }); },
          gap: 4, size: 40,
          grid: { show: false }
        },
        { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] }
      ],
      series: [
        {},
        {
          label: data.label,
          stroke: "#2457c5",
          fill: "rgba(36, 87, 197, 0.75)",
          paths: uPlot.paths.bars({ size: [0.6, 80] }),
          points: { show: false }
        }
      ]
    };
    box.textContent = "";
    var plot = new uPlot(opts, [xs, data.leads], box);
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(240, box.clientWidth), height: 220 });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
