"""kopf operators that reconcile edgeloom resources into Jobs (job kinds) or Deployments and
Services (service kinds), with their ConfigMaps and Secrets; one plugin per kind
(:mod:`edgeloom_operators.plugin`).

Run with ``kopf run --standalone --all-namespaces -m edgeloom_operators.main``. This package
imports ``edgeloom.api`` but never torch or ``edgeloom.algos``, so the operator image stays
small; only :mod:`edgeloom_operators.kube` talks to the Kubernetes API.
"""
