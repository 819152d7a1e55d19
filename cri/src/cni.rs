//! CNI: the node's network config (conflist) and plugin calls (ADD/DEL/CHECK), results cached for DEL.
