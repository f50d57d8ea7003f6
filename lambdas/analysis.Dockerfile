# Evaluator and benchmark Lambdas as a container image (see requirements-analysis.txt for why).
# Build context: lambdas/. Each function sets its own command (handler).
FROM public.ecr.aws/lambda/python:3.12
COPY requirements.txt requirements-analysis.txt ${LAMBDA_TASK_ROOT}/
RUN pip install --no-cache-dir -r ${LAMBDA_TASK_ROOT}/requirements-analysis.txt -t ${LAMBDA_TASK_ROOT}
COPY bedrock_pipeline ${LAMBDA_TASK_ROOT}/bedrock_pipeline
COPY handlers ${LAMBDA_TASK_ROOT}/handlers
# /var/task is read-only at run time: ship the project's bytecode (pip already compiled the packages).
RUN python -m compileall -q --invalidation-mode unchecked-hash ${LAMBDA_TASK_ROOT}/bedrock_pipeline ${LAMBDA_TASK_ROOT}/handlers
