// Charts: draw each figure the page carries as JSON (templates/_charts.html) with plotly.js,
// served by NEXUS itself from the installed plotly package (/vendor/plotly.min.js).
//
// The table view is in the HTML and visible until a chart is drawn, so a page reads without
// JavaScript or when plotly.js fails to load; the button switches between the two views.
(function () {
  "use strict";
  var CONFIG = { displaylogo: false, responsive: true };

  function parts(figure) {
    var plot = figure.querySelector(".chart-plot");
    return {
      figure: figure,
      plot: plot,
      table: figure.querySelector(".chart-table"),
      button: figure.querySelector(".chart-toggle"),
      json: plot ? figure.querySelector('script[data-chart-for="' + plot.id + '"]') : null
    };
  }

  function show(p, view) {
    var chart = view === "chart";
    p.figure.setAttribute("data-view", view);
    p.plot.hidden = !chart;
    p.table.hidden = chart;
    // The button names the view it switches to; pressed = the table is showing.
    p.button.textContent = chart ? "Table" : "Chart";
    p.button.setAttribute("aria-pressed", chart ? "false" : "true");
    if (chart && window.Plotly && p.plot.classList.contains("js-plotly-plot")) {
      window.Plotly.Plots.resize(p.plot);
    }
  }

  function draw(p) {
    var spec;
    try {
      spec = JSON.parse(p.json.textContent);
    } catch (error) {
      return;  // the table stays
    }
    var config = Object.assign({}, CONFIG, spec.config || {});
    p.plot.hidden = false;
    window.Plotly.newPlot(p.plot, spec.data || [], spec.layout || {}, config).then(function () {
      p.button.hidden = false;
      show(p, "chart");
    }, function () {
      p.plot.hidden = true;
    });
  }

  function start() {
    if (!window.Plotly) { return; }
    var figures = document.querySelectorAll("figure.chart");
    Array.prototype.forEach.call(figures, function (figure) {
      var p = parts(figure);
      if (!p.plot || !p.table || !p.button || !p.json) { return; }
      p.button.addEventListener("click", function () {
        show(p, figure.getAttribute("data-view") === "chart" ? "table" : "chart");
      });
      draw(p);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
