"""Settings of the gunicorn server that scripts/run.sh and docker-compose.yml start.

The access log has no query strings and no Referer: an admin search (``?q=<patient ID>``) or a
filtered list would otherwise write what someone typed into every line of the log, and the
Referer carries the previous page's query string too.
"""

accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
control_socket_disable = True
