/* neurondock console: progress polling, charts (uPlot), test invoke, log follow, fleet refresh.
   No inline scripts or styles anywhere (the Content-Security-Policy forbids them). */
(function () {
  "use strict";

  function csrf() { return document.body.dataset.csrf || ""; }

  function getJSON(url) {
    return fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    });
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function statusClass(s) {
    if (["InService", "COMPLETED", "Ready", "Active"].indexOf(s) >= 0) { return "ok"; }
    if (["Failed", "FAILED", "UpdateRollbackFailed", "OutOfService", "Inactive", "STOPPED"].indexOf(s) >= 0) { return "bad"; }
    if (["Deleting", "Deleted", "STOPPING", "Stopped"].indexOf(s) >= 0) { return "muted"; }
    return "busy";
  }

  function replicaState(r) {
    if (r.desired_state && r.desired_state !== "running" && r.state !== "Stopped" && r.state !== "Failed") {
      return "Stopping";
    }
    return r.state;
  }

  function fmtSize(bytes) {
    if (bytes === null || bytes === undefined) { return "—"; }
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], v = bytes, i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return i === 0 ? v.toFixed(0) + " B" : v.toFixed(1) + " " + units[i];
  }

  function nowText() { return new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC"; }

  /* ---------------------------------------------------------------- confirmations */
  document.querySelectorAll("form.confirm").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm || "Are you sure?")) { event.preventDefault(); }
    });
  });

  /* ---------------------------------------------------------------- endpoint page */
  function initEndpoint(page) {
    var badge = document.getElementById("ep-status");
    var progress = document.getElementById("progress");
    var progressText = document.getElementById("progress-text");
    var progressLog = document.getElementById("progress-log");
    var failure = document.getElementById("failure-reason");
    var modified = document.getElementById("ep-modified");
    var last = badge ? badge.textContent.trim() : "";
    var stopped = false;

    function renderReplicas(data) {
      var tbody = document.querySelector("#replicas tbody");
      if (!tbody) { return; }
      var rows = [];
      (data.variants || []).forEach(function (v) {
        (v.replicas || []).forEach(function (r) { rows.push([v, r]); });
      });
      tbody.textContent = "";
      if (!rows.length) {
        var tr = el("tr", "none"), td = el("td", null, "No replicas placed yet.");
        td.colSpan = 11; tr.appendChild(td); tbody.appendChild(tr);
        return;
      }
      rows.forEach(function (pair) {
        var v = pair[0], r = pair[1], tr = el("tr");
        var n = r.neuron_cores || [];
        var cores = !n.length ? "—" : (n.length === 1 ? String(n[0]) : n[0] + "–" + n[n.length - 1]) + " (" + r.neuron_cores_source + ")";
        var label = replicaState(r);
        var state = el("span", "badge " + statusClass(label), label);
        var cells = [String(r.id) + (r.standby ? " (standby)" : ""), v.name, r.host_id,
          (r.chips || []).join(", ") || "—", cores, state, r.pid || "—",
          r.setup_seconds !== null && r.setup_seconds !== undefined ? r.setup_seconds.toFixed(2) + " s" : "—",
          fmtSize(r.host_memory_bytes), fmtSize(r.device_memory_bytes), r.restarts];
        cells.forEach(function (c, i) {
          var td = el("td", i >= 6 ? "num" : null);
          if (c instanceof Node) { td.appendChild(c); } else { td.textContent = String(c); }
          tr.appendChild(td);
        });
        tbody.appendChild(tr);
      });
    }

    function renderVariants(data) {
      (data.variants || []).forEach(function (v) {
        var row = document.querySelector('#variants tr[data-variant="' + CSS.escape(v.name) + '"]');
        if (!row) { return; }
        row.querySelector(".v-count").textContent = v.current_instance_count + " / " + v.desired_instance_count;
        row.querySelector(".v-weight").textContent = v.current_weight.toFixed(2) + " / " + v.desired_weight.toFixed(2);
        row.querySelector(".v-status").textContent = v.status || "—";
      });
    }

    function settle(status) {
      progressText.textContent = "";
      progressText.appendChild(document.createTextNode("Settled: " + status + ". "));
      var again = el("a", null, "Reload the page");
      again.href = window.location.pathname;
      progressText.appendChild(again);
      progressText.appendChild(document.createTextNode(" to see everything that changed."));
    }

    function tick() {
      if (stopped) { return; }
      getJSON(page.dataset.statusUrl).then(function (data) {
        if (data.gone) {
          stopped = true;
          badge.textContent = "Deleted";
          badge.className = "badge muted";
          progress.classList.remove("hidden");
          progressLog.appendChild(el("li", null, nowText() + " deleted"));
          progressText.textContent = "The endpoint is gone.";
          document.getElementById("gone").classList.remove("hidden");
          document.querySelectorAll("form button").forEach(function (b) {
            if (!b.classList.contains("link")) { b.disabled = true; }
          });
          return;
        }
        var status = data.status;
        if (status !== last) {
          progress.classList.remove("hidden");
          var li = el("li");
          li.appendChild(el("span", "t", nowText()));
          li.appendChild(document.createTextNode(" " + last + " → " + status));
          progressLog.appendChild(li);
          last = status;
        }
        badge.textContent = status;
        badge.className = "badge " + statusClass(status);
        modified.textContent = (data.last_modified_at || "").replace("T", " ").replace("Z", " UTC").replace(/\.\d+/, "");
        if (data.failure_reason) {
          failure.textContent = data.failure_reason;
          failure.classList.remove("hidden");
        } else {
          failure.classList.add("hidden");
        }
        renderVariants(data);
        renderReplicas(data);
        if (data.in_progress) {
          progressText.textContent = status + "… this page follows the endpoint until it settles.";
        } else if (!progress.classList.contains("hidden")) {
          settle(status);
        }
        window.setTimeout(tick, data.in_progress ? 1000 : 5000);
      }).catch(function () { window.setTimeout(tick, 5000); });
    }
    window.setTimeout(tick, 1000);

    initCharts(page);
    initInvoke();
    initLogs(page);
  }

  /* ---------------------------------------------------------------- charts */
  var COLORS = ["#2457c5", "#d9480f", "#2b8a3e", "#862e9c"];

  function compact(v) {
    if (v === null || v === undefined) { return ""; }
    var a = Math.abs(v);
    if (a >= 1e9) { return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G"; }
    if (a >= 1e6) { return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M"; }
    if (a >= 1e3) { return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k"; }
    return String(Math.round(v * 100) / 100);
  }

  function loadChart(page, fig) {
    var stats = (fig.dataset.stats || "Sum").split(",");
    var note = fig.querySelector(".chart-note");
    var plot = fig.querySelector(".plot");
    var url = page.dataset.metricsUrl + "?metric=" + encodeURIComponent(fig.dataset.metric);
    return Promise.all(stats.map(function (s) { return getJSON(url + "&stat=" + encodeURIComponent(s)); })).then(function (series) {
      var missing = series.filter(function (s) { return !s.available; });
      var times = {};
      series.forEach(function (s) { s.points.forEach(function (p) { times[Date.parse(p.time) / 1000] = true; }); });
      var xs = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
      if (missing.length || !xs.length) {
        note.textContent = missing.length ? "No data: " + missing[0].reason : "No data points in the last hour.";
        plot.classList.add("hidden");
        if (fig.uplot) { fig.uplot.destroy(); fig.uplot = null; }
        return;
      }
      var data = [xs];
      series.forEach(function (s) {
        var byTime = {};
        s.points.forEach(function (p) { byTime[Date.parse(p.time) / 1000] = p.value; });
        data.push(xs.map(function (x) { return x in byTime ? byTime[x] : null; }));
      });
      note.textContent = "Source: " + (series[0].source || "metrics") + ". Updated " + nowText() + ".";
      plot.classList.remove("hidden");
      if (typeof window.uPlot !== "function") { note.textContent = "Charts are unavailable (uPlot did not load)."; return; }
      if (fig.uplot) { fig.uplot.destroy(); }
      var width = Math.max(280, plot.clientWidth || fig.clientWidth - 20);
      var opts = {
        width: width, height: 160,
        // The query window, not the data's extent: one point must not stretch the axis over years.
        scales: { x: { time: true, range: [Date.parse(series[0].start) / 1000, Date.parse(series[0].end) / 1000] } },
        legend: { show: true },
        series: [{}].concat(stats.map(function (s, i) {
          return { label: s, stroke: COLORS[i % COLORS.length], width: 2, points: { show: xs.length < 30 }, spanGaps: true };
        })),
        axes: [{}, { size: 50, values: function (u, vals) { return vals.map(compact); } }],
      };
      fig.uplot = new window.uPlot(opts, data, plot);
    }).catch(function (err) {
      note.textContent = "Could not load metrics (" + err.message + ").";
    });
  }

  function initCharts(page) {
    var figures = document.querySelectorAll("figure.chart");
    function refresh() {
      if (!document.hidden) { figures.forEach(function (fig) { loadChart(page, fig); }); }
    }
    refresh();
    // Live: every period and a half of the data plane's metrics flush (15 s with the default 10 s).
    window.setInterval(refresh, Number(page.dataset.chartRefreshMs) || 15000);
  }

  /* ---------------------------------------------------------------- test invoke */
  function initInvoke() {
    var form = document.getElementById("invoke-form");
    if (!form) { return; }
    var box = document.getElementById("invoke-result");
    var meta = document.getElementById("invoke-meta");
    var out = document.getElementById("invoke-output");
    var button = document.getElementById("invoke-submit");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      button.disabled = true;
      meta.textContent = "Invoking…";
      out.textContent = "";
      box.classList.remove("hidden");
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf(), "X-Requested-With": "fetch" },
      }).then(function (r) { return r.json(); }).then(function (res) {
        if (res.error && res.status === undefined) {
          meta.textContent = "Refused: " + res.error;
          return;
        }
        var parts = ["HTTP " + res.status];
        if (res.invoked_variant) { parts.push("variant " + res.invoked_variant); }
        parts.push(res.latency_ms + " ms round trip");
        if (res.content_type) { parts.push(res.content_type); }
        if (res.size !== undefined) { parts.push(res.size + " bytes" + (res.truncated ? " (shown truncated)" : "")); }
        meta.textContent = parts.join(" · ");
        meta.className = res.ok ? "" : "alert bad";
        var text = res.error || res.body;
        if (text === null || text === undefined) {
          text = "(binary response, base64) " + (res.body_base64 || "");
        } else {
          try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: show as is */ }
        }
        out.textContent = text;
      }).catch(function (err) {
        meta.textContent = "The request failed: " + err.message;
      }).finally(function () { button.disabled = false; });
    });
  }

  /* ---------------------------------------------------------------- logs */
  function initLogs(page) {
    var toggle = document.getElementById("follow-logs");
    var box = document.getElementById("logs");
    if (!toggle || !box) { return; }
    var cursor = null, timer = null;

    function render(data, append) {
      if (!append) { box.textContent = ""; }
      (data.replicas || []).forEach(function (chunk) {
        var pre = box.querySelector('pre[data-replica="' + chunk.replica_id + '"]');
        if (!pre) {
          box.appendChild(el("h3", null, "Replica " + chunk.replica_id + " · " + chunk.variant_name + " on " + chunk.host_id + " (" + chunk.source + ")"));
          pre = el("pre", "log");
          pre.dataset.replica = chunk.replica_id;
          box.appendChild(pre);
        }
        if (chunk.lines.length) {
          pre.textContent += (pre.textContent ? "\n" : "") + chunk.lines.join("\n");
          pre.scrollTop = pre.scrollHeight;
        }
      });
    }

    function poll() {
      var url = page.dataset.logsUrl + (cursor ? "?cursor=" + encodeURIComponent(cursor) : "");
      getJSON(url).then(function (data) {
        if (data.gone) { toggle.checked = false; return; }
        render(data, cursor !== null);
        cursor = data.cursor;
      }).catch(function () { /* keep following; the next poll retries */ }).finally(function () {
        if (toggle.checked) { timer = window.setTimeout(poll, 2000); }
      });
    }

    toggle.addEventListener("change", function () {
      if (toggle.checked) { cursor = null; poll(); } else if (timer) { window.clearTimeout(timer); timer = null; }
    });
  }

  /* ---------------------------------------------------------------- fleet */
  function initFleet(container) {
    var toggle = document.getElementById("fleet-refresh");
    function refresh() {
      if (!toggle || toggle.checked) {
        fetch(container.dataset.url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
          .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
          .then(function (html) { container.innerHTML = html; })
          .catch(function () { /* try again next time */ });
      }
      window.setTimeout(refresh, 5000);
    }
    window.setTimeout(refresh, 5000);
  }

  var endpointPage = document.getElementById("endpoint-page");
  if (endpointPage) { initEndpoint(endpointPage); }
  var fleetHosts = document.getElementById("fleet-hosts");
  if (fleetHosts) { initFleet(fleetHosts); }
})();
