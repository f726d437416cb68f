// slipway dashboard: live updates over Server-Sent Events, copy buttons,
// ticking elapsed times, and the build log (folding steps, ANSI colours).
"use strict";
(function () {
  function fmt(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h " + String(Math.floor(s / 60) % 60).padStart(2, "0") + "m";
  }
  function tick() {
    document.querySelectorAll(".elapsed[data-since]").forEach(function (el) {
      el.textContent = fmt(Date.now() - Number(el.dataset.since));
    });
  }
  setInterval(tick, 1000);

  // Absolute times come in UTC; show them in the reader's own zone, zone named.
  var localFmt = window.Intl && Intl.DateTimeFormat ? new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    hour12: false, timeZoneName: "short" }) : null;
  function localTimes(root) {
    if (!localFmt) return;
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      var text = localFmt.format(d);
      if (el.classList.contains("when-abs")) el.textContent = text;
      else el.title = text;
    });
  }
  localTimes();

  // Forms that undo something ask first.
  document.addEventListener("submit", function (e) {
    var f = e.target;
    if (f.dataset && f.dataset.confirm && !window.confirm(f.dataset.confirm)) e.preventDefault();
  });

  document.addEventListener("click", function (e) {
    var b = e.target.closest("button.copy");
    if (!b) return;
    var text = b.dataset.copy;
    var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var t = document.createElement("textarea");
      t.value = text; document.body.appendChild(t); t.select();
      try { document.execCommand("copy"); done(); } finally { t.remove(); }
    }
  });

  // The Now page: the server sends the page body whenever it changes.
  var now = document.getElementById("now");
  if (now && window.EventSource) {
    var es = new EventSource(now.dataset.live);
    es.addEventListener("now", function (e) { now.innerHTML = e.data; tick(); localTimes(now); });
  }

  // ANSI SGR to spans; everything else is text, so the log cannot inject markup.
  var SGR = /\x1b\[([0-9;]*)m/g;
  function ansi(line, parent) {
    var cls = [], last = 0, m;
    function put(text) {
      if (!text) return;
      if (cls.length) { var s = document.createElement("span"); s.className = cls.join(" "); s.textContent = text; parent.appendChild(s); }
      else parent.appendChild(document.createTextNode(text));
    }
    SGR.lastIndex = 0;
    while ((m = SGR.exec(line)) !== null) {
      put(line.slice(last, m.index));
      last = SGR.lastIndex;
      (m[1] || "0").split(";").forEach(function (c) {
        var n = Number(c);
        if (n === 0) cls = [];
        else if (n === 1) cls.push("ansi-b");
        else if (n === 3) cls.push("ansi-i");
        else if (n === 4) cls.push("ansi-u");
        else if ((n >= 30 && n <= 37) || (n >= 90 && n <= 97)) { cls = cls.filter(function (k) { return k.indexOf("fg") !== 0; }); cls.push("fg" + n); }
        else if (n >= 40 && n <= 47) { cls = cls.filter(function (k) { return k.indexOf("bg") !== 0; }); cls.push("bg" + n); }
        else if (n === 39) cls = cls.filter(function (k) { return k.indexOf("fg") !== 0; });
        else if (n === 49) cls = cls.filter(function (k) { return k.indexOf("bg") !== 0; });
      });
    }
    put(line.slice(last).replace(/\x1b\[[0-9;?]*[A-Za-z]/g, ""));
  }

  var log = document.getElementById("log");
  if (!log) return;
  var status = document.getElementById("log-status");
  var timeline = document.getElementById("timeline");
  var stick = true, pending = [], timer = null, group = null, groupKey = null, count = 0;
  var stations = {}; // "step platform" → {li, first, last}
  log.addEventListener("scroll", function () {
    stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
  });
  document.getElementById("log-bottom").addEventListener("click", function () { stick = true; log.scrollTop = log.scrollHeight; });
  document.getElementById("log-fold").addEventListener("click", function (e) {
    var open = e.target.textContent === "Unfold all";
    log.querySelectorAll("details").forEach(function (d) { d.open = open; });
    e.target.textContent = open ? "Fold all" : "Unfold all";
  });

  // station keeps the timeline: one station per step, with a lane per
  // platform side by side when the step runs on several.
  function station(ev) {
    if (!ev.step || !timeline) return;
    var name = ev.step.split(":")[0];
    var t = Date.parse(ev.time);
    var s = stations[name];
    if (!s) {
      var li = document.createElement("li");
      li.className = "station group";
      li.dataset.step = name;
      li.innerHTML = '<span class="name"></span><span class="took"></span><div class="lanes"></div>';
      li.firstChild.textContent = name;
      timeline.appendChild(li);
      Object.keys(stations).forEach(function (k) { stations[k].li.classList.remove("active"); });
      li.classList.add("active");
      s = stations[name] = { li: li, first: t, last: t, lanes: {} };
    }
    s.last = t;
    s.li.children[1].textContent = fmt(s.last - s.first);
    if (ev.platform) {
      var lane = s.lanes[ev.platform];
      if (!lane) {
        var el = document.createElement("span");
        el.className = "lane";
        el.dataset.platform = ev.platform;
        el.innerHTML = '<span class="name"></span><span class="took"></span>';
        el.firstChild.textContent = ev.platform.replace("linux/", "");
        s.li.lastChild.appendChild(el);
        lane = s.lanes[ev.platform] = { el: el, first: t, last: t };
      }
      lane.last = t;
      lane.el.lastChild.textContent = fmt(lane.last - lane.first);
    }
  }

  function flush() {
    timer = null;
    var frag = document.createDocumentFragment();
    var target = group;
    pending.forEach(function (ev) {
      var key = ev.step || "";
      if (!target || key !== groupKey) {
        groupKey = key;
        target = document.createElement("details");
        target.open = true;
        var sum = document.createElement("summary");
        sum.textContent = ev.step || "slipway";
        target.appendChild(sum);
        frag.appendChild(target);
        group = target;
      }
      var div = document.createElement("div");
      div.className = "l";
      div.id = "L" + ev.no;
      var n = document.createElement("span"); n.className = "n"; n.textContent = ev.no; div.appendChild(n);
      if (ev.platform) {
        var p = document.createElement("span"); p.className = "p p-" + ev.platform.replace(/\W/g, "-");
        p.textContent = ev.platform.replace("linux/", ""); div.appendChild(p);
      }
      ansi(ev.text, div);
      target.appendChild(div);
      station(ev);
    });
    pending = [];
    log.appendChild(frag);
    log.dataset.lines = count;
    if (stick) log.scrollTop = log.scrollHeight;
  }

  var es = new EventSource(log.dataset.src);
  es.onopen = function () { status.textContent = "live"; };
  es.addEventListener("line", function (e) {
    var ev = JSON.parse(e.data);
    pending.push(ev);
    count++;
    if (!timer) timer = setTimeout(flush, 30);
  });
  es.addEventListener("end", function (e) {
    es.close();
    var d = JSON.parse(e.data);
    if (timer) { clearTimeout(timer); }
    flush();
    Object.keys(stations).forEach(function (k) { stations[k].li.classList.remove("active"); });
    if (timeline) {
      var li = document.createElement("li");
      li.className = "station done";
      li.innerHTML = '<span class="name">done</span><span class="took"></span>';
      li.lastChild.textContent = d.state;
      timeline.appendChild(li);
    }
    status.textContent = d.lines + " lines · " + d.state;
    log.dataset.state = d.state;
    var st = document.querySelector("h1 .state");
    if (st && st.textContent.trim().indexOf(d.state) < 0) refresh();
  });

  // refresh fetches the page again once the build ended and swaps in every
  // part but the log, so digests, tests and actions appear without a reload.
  function refresh() {
    fetch(location.href, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var main = document.querySelector("main"), fresh = doc.querySelector("main");
      if (!fresh) return;
      var keep = main.querySelector(".log-card"), tl = main.querySelector("#timeline");
      var freshTl = fresh.querySelector("#timeline");
      if (freshTl && tl) freshTl.replaceWith(tl);
      Array.from(main.children).forEach(function (c) { if (c !== keep) c.remove(); });
      Array.from(fresh.children).forEach(function (c) {
        if (c.classList.contains("log-card")) return;
        main.insertBefore(document.adoptNode(c), keep);
      });
      document.title = doc.title;
      log.dataset.refreshed = "1";
    });
  }
  es.onerror = function () { if (log.dataset.state === undefined) status.textContent = "reconnecting…"; };
})();
