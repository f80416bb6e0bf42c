FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt requirements-ocr.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-ocr.txt
COPY scripts/install_viewer.py scripts/
# The OHIF viewer (/viewer/), fetched and checked at build time, never at run time.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends npm >/dev/null \
 && python scripts/install_viewer.py viewer/ohif \
 && apt-get purge -y -qq npm >/dev/null && apt-get autoremove -y -qq >/dev/null && rm -rf /var/lib/apt/lists/* /root/.npm
COPY . .
RUN useradd --system --home /app dicom && chown -R dicom /app
USER dicom
EXPOSE 8000 11112
