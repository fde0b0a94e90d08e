"""The market for packet-processing services: requests, negotiation, auctions, ratings, money."""
