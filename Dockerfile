# One image for the trainer and the service (CPU torch; the GPU trainer profile uses TORCH_SPEC).
FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
WORKDIR /app
RUN pip install --no-cache-dir "${TORCH_SPEC}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY recsys recsys
COPY pipelines pipelines
COPY configs configs
RUN pip install --no-cache-dir -e ".[postgres]"
ENV PYTHONUNBUFFERED=1
CMD ["python", "-m", "pipelines.serve", "--help"]
