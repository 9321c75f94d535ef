"""What every prequal process needs and nothing business-specific.

Settings, structured logging, database engines and Kafka client configuration. This
package imports no sibling package: it sits at the bottom of the import graph.
"""
