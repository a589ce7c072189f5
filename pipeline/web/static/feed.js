"use strict";
// The live event feed: each track the match log gets arrives as a server-sent event and is shown at the top.
(function () {
  const list = document.getElementById("events");
  const state = document.getElementById("state");
  const kept = 200;

  function image(cls, url, alt) {
    const fig = document.createElement("figure");
    if (url) {
      const img = document.createElement("img");
      img.className = cls;
      img.src = url;
      img.alt = alt;
      fig.appendChild(img);
    }
    const cap = document.createElement("figcaption");
    cap.textContent = alt;
    fig.appendChild(cap);
    return fig;
  }

  function show(ev) {
    const item = document.createElement("li");
    item.className = "event " + ev.decision;
    item.id = "event-" + ev.ref.replace(":", "-");
    item.dataset.ref = ev.ref;
    const link = document.createElement("a");
    link.className = "view";
    link.href = ev.track_url;
    link.textContent = ev.ref;
    const what = document.createElement("p");
    const who = ev.identity ? ev.identity : ev.decision;
    const score = ev.score === null ? "" : " (" + ev.score.toFixed(3) + ")";
    const when = ev.seen_start ? ev.seen_start.slice(0, 19).replace("T", " ") + " UTC" : "time unknown";
    const zones = ev.zones && ev.zones.length ? ", zones " + ev.zones.join(", ") : "";
    what.appendChild(link);
    what.appendChild(document.createTextNode(" " + who + score + ", " + ev.source + ", " + when + zones));
    item.appendChild(what);
    const row = document.createElement("div");
    row.className = "pair";
    row.appendChild(image("snapshot", ev.snapshot_url, "context"));
    row.appendChild(image("thumb crop", ev.crop_url, "best crop"));
    if (ev.enrolled_url) row.appendChild(image("enrolled", ev.enrolled_url, "enrolled: " + ev.identity));
    item.appendChild(row);
    list.prepend(item);
    while (list.children.length > kept) list.lastElementChild.remove();
  }

  const feed = new EventSource(list.dataset.src);
  feed.addEventListener("track", (e) => show(JSON.parse(e.data)));
  feed.onopen = () => { state.textContent = "live"; };
  feed.onerror = () => { state.textContent = "reconnecting"; };
})();
