"""The pages' templates (server-rendered; a page's script, where it has one, is a file the app serves: the
Content-Security-Policy allows no inline script nor style), the links between them (:func:`nav`) and their one
stylesheet (``/style.css``). The routers render them with :func:`render`: recent matches, tracks, search by photo,
unknown groups, an identity's timeline, the match view of one track, the login form.
"""

from __future__ import annotations

import logging

from fastapi.responses import HTMLResponse
from jinja2 import DictLoader, Environment
from sqlalchemy import select

from gallery.db import Database
from pipeline.web.access import allows
from pipeline.web.common import Context, Forensic, clock

__all__ = ["PAGES", "STYLE", "names", "nav", "one_line", "render"]

logger = logging.getLogger(__name__)


# the one stylesheet of every page (/style.css: the Content-Security-Policy allows no inline style)
STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ccc;padding:4px 10px;text-align:left}img.thumb{height:64px}
.match{color:#060;font-weight:bold}.unknown{color:#777}.error{color:#a00;font-weight:bold}
nav a{margin-right:1em}nav form{display:inline}.pair{display:flex;gap:2em}.pair figure{margin:0}
.pair img{height:224px}.group{border-top:1px solid #ccc;padding:.5em 0}.group img.best{height:112px}
.context img,.context video{max-width:640px;max-height:360px}.feed img.snapshot{height:160px}
.feed .pair img{height:112px}.feed li{border-top:1px solid #ccc;padding:.5em 0}
"""

LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}{% endblock %}</title>
<link rel="stylesheet" href="/style.css"></head><body>
{{ nav | safe }}
{% block body %}{% endblock %}
</body></html>"""

WHEN = """{% macro when(r) %}{% if r.seen_start %}{{ r.seen_start[:19] | replace("T", " ") }} &ndash; {{
r.seen_end[11:19] }} UTC ({{ r.start_time | clock }} in the {{ "stream" if r.kind == "camera" else "file" }}){% else
%}time unknown ({{ r.start_time | clock }} &ndash; {{ r.end_time | clock }} in the file){% endif %}{% endmacro %}"""

FILTERS = """{% macro filters(action, source_label) %}<form method="get" action="{{ action }}">
 <label>Identity <select name="identity"><option value="">any</option>
 {% for n in identities %}<option{% if n == identity %} selected{% endif %}>{{ n }}</option>{% endfor %}
 </select></label>
 <label>{{ source_label }} <select name="source"><option value="">any</option>
 {% for n in sources %}<option{% if n == source %} selected{% endif %}>{{ n }}</option>{% endfor %}
 </select></label>
 <label>Decision <select name="decision"><option value="">any</option>
 {% for d in ["match", "unknown"] %}<option{% if d == decision %} selected{% endif %}>{{ d }}</option>{%
 endfor %}
 </select></label>
 <button type="submit">Filter</button>
</form>{% endmacro %}"""

SEARCH = """{% extends "layout" %}{% from "when" import when %}{% block title %}Search by photo{% endblock %}
{% block body %}<h1>Search by photo</h1>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="post" action="/search" enctype="multipart/form-data">
 <label>Photo <input type="file" name="photo" accept="image/*" required></label>
 <label>Face <input type="number" name="face" min="1" value="{{ form.face or '' }}" size="3"></label>
 <label>Top <input type="number" name="top" min="1" max="1000" value="{{ form.top or 10 }}" size="4"></label>
 <label>Min score <input type="text" name="min_score" value="{{ form.min_score or '' }}" size="5"></label>
 <label>Source <select name="source"><option value="">any</option>
 {% for n in sources %}<option{% if n == form.source %} selected{% endif %}>{{ n }}</option>{% endfor %}
 </select></label>
 <label>Since <input type="text" name="since" value="{{ form.since or '' }}" placeholder="2026-03-01T10:00:00Z">
 </label><label>Until <input type="text" name="until" value="{{ form.until or '' }}"></label>
 <button type="submit">Search</button>
</form>
{% if rows is not none %}<h2>{{ rows | length }} tracks{% if photo %} like {{ photo }}{% endif %}</h2>
<table id="results"><thead><tr><th>Track</th><th>Face</th><th>Score</th><th>Source</th><th>Seen</th>
<th>Logged (UTC)</th><th>Decision</th><th></th></tr></thead><tbody>
{% for r in rows %}<tr class="row">
 <td class="ref">{{ r.ref }}</td>
 <td>{% if r.thumbnail_url %}<img class="thumb" alt="track {{ r.ref }}" src="{{ r.thumbnail_url }}">{% endif %}</td>
 <td>{{ "%.3f" | format(r.score) }}</td><td>{{ r.source }}</td><td>{{ when(r) }}</td>
 <td>{{ r.logged_at[:19] | replace("T", " ") }}</td>
 <td class="{{ r.decision }}">{{ r.identity or r.decision }}</td>
 <td><a class="view" href="/track/{{ r.ref }}">view</a></td></tr>
{% else %}<tr><td colspan="8">No track.</td></tr>{% endfor %}</tbody></table>{% endif %}
{% endblock %}"""

UNKNOWNS = """{% extends "layout" %}{% block title %}Unknown groups{% endblock %}
{% block body %}<h1>Unknown groups</h1>
<form method="get" action="/unknowns">
 <label>Source <select name="source"><option value="">any</option>
 {% for n in sources %}<option{% if n == source %} selected{% endif %}>{{ n }}</option>{% endfor %}
 </select></label>
 <label>Min size <input type="number" name="min_size" min="1" value="{{ min_size }}" size="3"></label>
 <button type="submit">Group</button>
</form>
<p>{{ doc.groups | length }} groups of {{ doc.min_size }}+ tracks out of {{ doc.tracks }} unknown tracks
({{ doc.singletons }} seen once){% if doc.threshold is not none %}, threshold {{ "%.3f" | format(doc.threshold)
}}{% endif %}.</p>
{% for g in doc.groups %}<div class="group" id="group{{ g.group }}">
 <h2>Group {{ g.group }}: {{ g.size }} tracks</h2>
 <p>{% if g.thumbnail_url %}<a href="/track/{{ g.best }}"><img class="best thumb" alt="group {{ g.group }}"
 src="{{ g.thumbnail_url }}"></a>{% endif %}
 {% if g.first_seen %}Seen {{ g.first_seen[:19] | replace("T", " ") }} to {{ g.last_seen[:19] | replace("T", " ")
 }} UTC{% else %}Seen at unknown times{% endif %} in {{ g.sources | join(", ") }}{% if g.mean_similarity is not none
 %}; mean similarity
 {{ "%.3f" | format(g.mean_similarity) }}{% endif %}</p>
 <p>{% for t in g.tracks[:shown] %}<a href="/track/{{ t.ref }}">{% if t.thumbnail_url %}<img class="thumb"
 alt="track {{ t.ref }}" title="{{ t.ref }} {{ t.source }} {{ t.seen_start or t.start_time | clock }}"
 src="{{ t.thumbnail_url }}">{% else %}{{ t.ref }}{% endif %}</a>
 {% endfor %}{% if g.size > shown %}(+{{ g.size - shown }}){% endif %}</p></div>
{% else %}<p>No group.</p>{% endfor %}
{% endblock %}"""

TIMELINE = """{% extends "layout" %}{% from "when" import when %}{% block title %}Timeline{% endblock %}
{% block body %}<h1>Timeline{% if name %} of {{ name }}{% endif %}</h1>
<form method="get" action="/timeline">
 <label>Identity <select name="name">
 {% for n in identities %}<option{% if n == name %} selected{% endif %}>{{ n }}</option>{% endfor %}
 </select></label> <button type="submit">Show</button>
</form>
{% if rows is not none %}<table id="timeline"><thead><tr><th>Track</th><th>Face</th><th>Seen</th><th>Source</th>
<th>Logged (UTC)</th><th>Score</th><th>Decision</th><th></th></tr></thead><tbody>
{% for r in rows %}<tr class="row">
 <td class="ref">{{ r.ref }}</td>
 <td>{% if r.thumbnail_url %}<img class="thumb" alt="track {{ r.ref }}" src="{{ r.thumbnail_url }}">{% endif %}</td>
 <td>{{ when(r) }}</td><td>{{ r.source }}</td><td>{{ (r.logged_at or "")[:19] | replace("T", " ") }}</td>
 <td>{{ "%.3f" | format(r.score) if r.score is not none else "" }}</td>
 <td class="match">match{% if r.retroactive %} (retroactive){% endif %}{% if r.reviewed %}
 <span class="reviewed">({{ r.reviewed }})</span>{% endif %}</td>
 <td><a class="view" href="/track/{{ r.ref }}">view</a></td></tr>
{% else %}<tr><td colspan="8">Not seen.</td></tr>{% endfor %}</tbody></table>
<p>{% if page > 1 %}<a href="?{{ prev }}">earlier</a>{% endif %}
{% if has_more %}<a id="later" href="?{{ next }}">later</a>{% endif %}</p>{% endif %}
{% endblock %}"""

TRACK = """{% extends "layout" %}{% from "when" import when %}{% block title %}Track {{ t.ref }}{% endblock %}
{% block body %}<h1>Track {{ t.ref }}</h1><p>{{ t.source }}, {{ when(t) }}</p>
<div class="pair">
 <figure>{% if t.thumbnail_url %}<img class="thumb crop" alt="best crop of the track" src="{{ t.thumbnail_url }}">
 {% else %}<p>No thumbnail.</p>{% endif %}<figcaption>Best crop of track {{ t.ref }}
 </figcaption></figure>
 {% if t.enrolled %}<figure>{% if t.enrolled.url %}<img class="enrolled" alt="enrolled face of {{
 t.enrolled.identity }}" src="{{ t.enrolled.url }}">{% else %}<p class="note">{{ t.enrolled.note }}</p>{% endif %}
 <figcaption>Enrolled: {{ t.enrolled.identity }}, {{ t.enrolled.enrolled_from }} (similarity
 {{ "%.3f" | format(t.enrolled.score) }})</figcaption></figure>{% endif %}
</div>
{% if t.snapshot_url %}<figure class="context"><img class="snapshot" alt="context of track {{ t.ref }}"
 src="{{ t.snapshot_url }}"><figcaption>The frame the track was seen in</figcaption></figure>{% endif %}
{% if t.clip_url %}<figure class="context"><video id="clip" controls muted playsinline preload="auto"
 src="{{ t.clip_url }}#t={{ t.clip_start_s }}" data-start="{{ t.clip_start_s }}"></video>
 <figcaption>Clip of the track, opened at the sighting ({{ t.clip_start_s }} s in)</figcaption>
 </figure>{% endif %}
{% if t.export_url %}<form method="post" action="{{ t.export_url }}"><button type="submit" id="export">Export
 evidence (zip)</button></form>{% endif %}
<table id="track">
<tr><th>Decision</th><td class="{{ t.decision }}">{{ t.identity or t.decision }}{% if t.retroactive %}
 (retroactive, rematch {{ t.rematch_id }}){% endif %}{% if t.score is not none %}, score {{ "%.3f" | format(t.score)
 }}{% endif %}</td></tr>
{% if t.retroactive %}<tr><th>Logged decision</th><td>{{ t.logged_identity or t.logged_decision }}</td></tr>{% endif %}
{% if t.review %}<tr><th>Review</th><td id="reviewed" class="{{ t.reviewed }}">{{ t.reviewed }}{% if t.reviewed ==
 "rejected" %} (not {{ t.review.identity }}){% elif t.review.identity %} {{ t.review.identity }}{% endif %} by {{
 t.review.reviewer }}, {{ (t.review.at or "")[:19] | replace("T", " ") }} UTC{% if t.review.note %}: {{ t.review.note
 }}{% endif %}{% if t.reviewed in ("confirmed", "named") %}<br>To add its crops to the template:
 <code>run_pipeline.py enroll --name {{ t.review.identity }} --from-track {{ t.ref }}</code>{% endif %}</td></tr>{%
 endif %}
<tr><th>Seen</th><td id="seen">{% if t.seen_start %}{{ t.seen_start }} &ndash; {{ t.seen_end }} ({{ t.time_origin
 }}){% else %}time unknown{% endif %}</td></tr>
<tr><th>Within the {{ "stream" if t.kind == "camera" else "file" }}</th><td>{{ t.start_time | clock }} &ndash;
 {{ t.end_time | clock }}</td></tr>
<tr><th>Logged (UTC)</th><td>{{ (t.logged_at or "")[:19] | replace("T", " ") }}</td></tr>
<tr><th>Frames, crops embedded</th><td>{{ t.frames }}, {{ t.crops_embedded }}</td></tr>
{% if t.zones is not none %}<tr><th>Zones entered</th><td id="zones">{{ t.zones | join(", ") if t.zones else "none"
 }}</td></tr>{% endif %}
<tr><th>Reference</th><td>{{ t.ref }}</td></tr>
</table>
{% if allows("investigator") %}<div id="review"><h2>Review</h2>
{% if t.decision == "match" and t.reviewed != "rejected" %}<form method="post" action="/api/tracks/{{ t.ref }}/review">
 <input type="hidden" name="identity" value="{{ t.identity }}">
 <label>Note <input type="text" name="note" maxlength="2000"></label>
 <button type="submit" name="verdict" value="confirmed" id="confirm">Confirm: {{ t.identity }}</button>
 <button type="submit" name="verdict" value="rejected" id="reject">Reject: not {{ t.identity }}</button>
 <button type="submit" name="verdict" value="acknowledged" id="ack">Acknowledge the alert</button></form>
{% else %}<form method="post" action="/api/tracks/{{ t.ref }}/review"><input type="hidden" name="verdict" value="named">
 <label>Name this track <input type="text" name="identity" required maxlength="200"></label>
 <label>Note <input type="text" name="note" maxlength="2000"></label>
 <button type="submit" id="name">Name</button></form>{% endif %}</div>{% endif %}
{% endblock %}"""

MATCHES = """{% extends "layout" %}{% from "filters" import filters with context %}
{% block title %}Recent matches{% endblock %}
{% block body %}<h1>Recent matches</h1>
{{ filters("/", "Camera") }}
<table id="matches"><thead><tr><th>Track</th><th>Face</th><th>Seen (UTC)</th><th>Camera</th><th>Identity</th>
<th>Score</th><th>Decision</th><th>Zones</th></tr></thead><tbody>
{% for r in rows %}<tr class="row">
 <td class="ref"><a class="view" href="/track/{{ r.ref }}">{{ r.ref }}</a></td>
 <td>{% if r.thumbnail %}<img class="thumb" alt="track {{ r.ref }}" src="/thumbnails/{{ r.thumbnail_url
 }}">
 {% endif %}</td>
 <td>{{ r.seen_start[:19] | replace("T", " ") if r.seen_start else "time unknown" }}</td><td>{{ r.source }}</td>
 <td>{{ r.identity or ("nearest: " ~ r.candidates[0].name if r.candidates else "") }}</td>
 <td>{{ "%.3f" | format(r.score) if r.score is not none else "" }}</td>
 <td class="{{ r.decision }}">{{ r.decision }}{% if r.retroactive %} (retroactive){% endif %}{% if r.reviewed %}
 <span class="reviewed">({{ r.reviewed }})</span>{% endif %}</td>
 <td class="zones">{{ r.zones | join(", ") if r.zones else "" }}</td></tr>
{% else %}<tr><td colspan="8">No matches.</td></tr>{% endfor %}
</tbody></table>
<p>{% if page > 1 %}<a id="newer" href="?{{ prev }}">newer</a>{% endif %}
{% if has_more %}<a id="older" href="?{{ next }}">older</a>{% endif %}</p>
{% endblock %}"""

TRACKS = """{% extends "layout" %}{% from "when" import when %}{% from "filters" import filters with context %}
{% block title %}Tracks{% endblock %}
{% block body %}<h1>Tracks</h1>
{{ filters("/tracks", "Source") }}
<table id="tracks"><thead><tr><th>Track</th><th>Face</th><th>Seen</th><th>Source</th><th>Frames</th>
<th>Decision</th><th>Score</th><th>Zones</th></tr></thead><tbody>
{% for r in rows %}<tr class="row">
 <td class="ref"><a class="view" href="/track/{{ r.ref }}">{{ r.ref }}</a></td>
 <td>{% if r.thumbnail_url %}<img class="thumb" alt="track {{ r.ref }}" src="{{ r.thumbnail_url }}">{% endif %}</td>
 <td>{{ when(r) }}</td><td>{{ r.source }}</td><td>{{ r.frames }}</td>
 <td class="{{ r.decision }}">{{ r.identity or r.decision or "" }}{% if r.retroactive %} (retroactive){% endif %}{%
 if r.reviewed %} <span class="reviewed">({{ r.reviewed }})</span>{% endif %}</td>
 <td>{{ "%.3f" | format(r.score) if r.score is not none else "" }}</td>
 <td class="zones">{{ r.zones | join(", ") if r.zones else "" }}</td></tr>
{% else %}<tr><td colspan="8">No tracks.</td></tr>{% endfor %}
</tbody></table>
<p>{% if page > 1 %}<a id="newer" href="?{{ prev }}">newer</a>{% endif %}
{% if has_more %}<a id="older" href="?{{ next }}">older</a>{% endif %}</p>
{% endblock %}"""

FEED = """{% extends "layout" %}{% block title %}Live feed{% endblock %}
{% block body %}<h1>Live feed</h1><p>Tracks as they are logged, newest first: <span id="state">connecting</span></p>
<ol id="events" class="feed" data-src="/api/feed"></ol>
<script src="/feed.js"></script>
{% endblock %}"""

LOGIN = """{% extends "layout" %}{% block title %}Log in{% endblock %}
{% block body %}<h1>Log in</h1>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="post" action="/login" id="token-login">
 <label>API token <input type="password" name="token" autocomplete="off" required autofocus></label>
 <button type="submit">Log in</button>
</form>
<p>or</p>
<form method="post" action="/login" id="password-login">
 <label>Name <input type="text" name="name" autocomplete="username" required></label>
 <label>Password <input type="password" name="password" autocomplete="current-password" required></label>
 <button type="submit">Log in</button>
</form>
{% endblock %}"""

NAV = """<nav>{% for url, text in links %}<a href="{{ url }}">{{ text }}</a>{% endfor %}{% if logout %}
<form method="post" action="/logout"><button type="submit" id="logout">Log out</button></form>{% endif %}</nav>"""

PAGES = Environment(
    autoescape=True,
    loader=DictLoader(
        {
            "nav": NAV,
            "feed": FEED,
            "matches": MATCHES,
            "tracks": TRACKS,
            "login": LOGIN,
            "layout": LAYOUT,
            "when": WHEN,
            "filters": FILTERS,
            "search": SEARCH,
            "unknowns": UNKNOWNS,
            "timeline": TIMELINE,
            "track": TRACK,
        }
    ),
)
PAGES.filters["clock"] = clock
PAGES.globals["allows"] = allows  # pages offer only what the actor's role may use


def nav(forensic: Forensic, logout: bool = False) -> str:
    """The links between the views this server has, as HTML (shown with ``| safe``); ``logout``: with a log out
    button (a server with a token)."""
    links = [("/", "Recent matches"), ("/tracks", "Tracks"), ("/feed", "Live feed")]
    investigator = allows("investigator")  # the pages a viewer cannot use are not linked
    links += [("/search", "Search by photo")] if forensic.search is not None and investigator else []
    links += [("/unknowns", "Unknown groups")] if forensic.unknowns is not None and investigator else []
    links += [("/timeline", "Timelines")]
    links += [("/reviews", "Review queue")] if investigator else []
    links += [("/audit", "Audit trail")] if allows("admin") else []
    return PAGES.get_template("nav").render(links=links, logout=logout)


def names(db: Database, column) -> list[str]:
    """The values of ``column`` in order, at most 1000 (a form's choices)."""
    with db.session() as session:
        return list(session.scalars(select(column).order_by(column).limit(1000)))


def one_line(error: dict) -> str:
    """A validation error as one line: ``loc: msg``."""
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


def render(ctx: Context, template: str, status: int = 200, **values) -> HTMLResponse:
    """The page ``template`` with the links of ``ctx``'s server above it."""
    bar = nav(ctx.forensic, ctx.logout)
    return HTMLResponse(PAGES.get_template(template).render(nav=bar, **values), status_code=status)
