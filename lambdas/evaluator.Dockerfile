# Evaluator Lambda as a container image (see requirements-evaluator.txt for why). Build context: lambdas/.
FROM public.ecr.aws/lambda/python:3.12
COPY requirements.txt requirements-evaluator.txt ${LAMBDA_TASK_ROOT}/
RUN pip install --no-cache-dir -r ${LAMBDA_TASK_ROOT}/requirements-evaluator.txt -t ${LAMBDA_TASK_ROOT}
COPY bedrock_pipeline ${LAMBDA_TASK_ROOT}/bedrock_pipeline
COPY handlers ${LAMBDA_TASK_ROOT}/handlers
CMD ["handlers.evaluator.handler"]
