"""edgeloom's Grafana dashboards, generated with Grafana's typed SDK (grafana-foundation-sdk).

:mod:`.panels` holds the building blocks (label selectors, panels, sections) and
:class:`~.panels.KindDashboard`, what a kind plugin's ``dashboard()`` hook returns;
:mod:`.board` assembles a kind's dashboard from the shared skeleton (its resources with their
phase, a job's progress, scrape health) and the kind's own sections; :mod:`.operator` builds the
operator's; :mod:`.generate` writes them into the chart (``edgeloom dashboards``) and checks the
committed files for drift (``edgeloom dashboards --check``). The builders of today's kinds sit
beside them: :mod:`.splittrainingjob`, :mod:`.prunejob`.
"""
